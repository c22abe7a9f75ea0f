//! The redb layer: table layout, opening and format checks, reads, and applying checked
//! operations inside a write transaction.
//!
//! Tables (see `docs/design.md` for the byte layouts):
//! - `roost_data`: key bytes → record envelope ([`crate::record`]);
//! - `roost_expiry`: expiry index, `expiry_ms (u64 BE) ‖ key` → `()`; it holds exactly one entry
//!   per record with an expiry, so the sweeper finds expired records by a range scan;
//! - `roost_meta`: `format`, `etag_seq` and `clean` (see [`open`]).
//!
//! Invariant kept by `Applier::flush`: a record and its expiry-index entry are written,
//! replaced or removed together, in the same write transaction.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::codec::Codec;
use crate::error::Error;
use crate::options::Options;
use crate::overlay::Planned;
use crate::query::index::{self, INDEX, IndexDef};
use crate::read::Cut;
use crate::record;
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
        wal::remove_log_files(path).map_err(|err| {
            Error::Storage(format!(
                "cannot remove the stale write-ahead log of {shown}: {err}"
            ))
        })?;
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
    finish_open(db, &shown, options, Some(path))
}

/// Format checks, codec, indexes and write-ahead-log replay: everything after redb has opened
/// the storage. `db_path` is `None` for a custom storage backend (no log).
fn finish_open(
    db: redb::Database,
    shown: &str,
    options: &Options,
    db_path: Option<&Path>,
) -> Result<Opened, Error> {
    let mut last_etag =
        catch_unwind(AssertUnwindSafe(|| initialize(&db, shown))).unwrap_or_else(|_| {
            Err(Error::Corrupted(format!(
                "{shown}: the storage layer failed reading its metadata"
            )))
        })?;
    let codec = crate::codec::prepare(&db, &options.codec, options.limits.max_value_bytes)?;
    let indexes = crate::query::index::reconcile(&db, &options.indexes, &codec)?;
    let wal = match db_path {
        Some(path) => {
            let seq = recover(&db, path, &indexes, &codec, &mut last_etag)?;
            let log_error = |err: std::io::Error| {
                Error::Storage(format!(
                    "cannot start the write-ahead log of {shown}: {err}"
                ))
            };
            if options.logs() {
                let wal =
                    Wal::create(path, seq + 1, options.log_segment_bytes()).map_err(log_error)?;
                Some((wal, seq))
            } else {
                // Eventual durability (or a log turned off) does not log; the replayed log
                // goes.
                wal::remove_log_files(path).map_err(log_error)?;
                None
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

/// Re-applies the batches the write-ahead log of the database at `db_path` holds beyond the
/// checkpointed sequence, in one durable commit. Returns the sequence the next batch follows
/// (the log files themselves are replaced by the caller).
fn recover(
    db: &redb::Database,
    db_path: &Path,
    indexes: &[IndexDef],
    codec: &Codec,
    last_etag: &mut u64,
) -> Result<u64, Error> {
    let checkpointed = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        read_u64(&meta, META_WAL_SEQ)?.unwrap_or(0)
    };
    let batches = wal::read_all(db_path, checkpointed).map_err(|err| {
        Error::Storage(format!(
            "cannot read the write-ahead log of {}: {err}",
            db_path.display()
        ))
    })?;
    let Some(last) = batches.last() else {
        return Ok(checkpointed);
    };
    let replayed_seq = last.seq;
    let started = std::time::Instant::now();
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut applier = Applier::new(&txn, indexes, codec)?;
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
    tracing::info!(
        batches = batches.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        path = %db_path.display(),
        "replayed the write-ahead log"
    );
    Ok(replayed_seq)
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

/// Expiry-index key: `expiry_ms (u64 BE) ‖ key`, so entries sort by expiry.
pub(crate) fn expiry_key(expires_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Applies final states (planned by the writer, or replayed from the log) inside one write
/// transaction, keeping the expiry and secondary indexes in step.
pub(crate) struct Applier<'txn> {
    data: redb::Table<'txn, &'static [u8], &'static [u8]>,
    expiry: redb::Table<'txn, &'static [u8], ()>,
    index: redb::Table<'txn, &'static [u8], ()>,
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
            data: txn.open_table(DATA)?,
            expiry: txn.open_table(EXPIRY)?,
            index: txn.open_table(INDEX)?,
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
        if !self.indexes.is_empty() {
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

/// Copies every table of one consistent cut — redb's data, expiry, index and meta as stored,
/// then the overlay's unapplied writes applied on top — into a new database file at `path`
/// (which must not exist), durably. The copy includes every acknowledged write; writers keep
/// going meanwhile. It holds no write-ahead log of its own: its meta records the log sequence
/// it includes, so a log left beside it is not replayed twice.
pub(crate) fn snapshot_to(
    cut: &Cut,
    indexes: &[IndexDef],
    codec: &Codec,
    path: &Path,
) -> Result<SnapshotStats, Error> {
    if path.exists() {
        return Err(Error::Storage(format!(
            "{} already exists; a snapshot is written to a new file",
            path.display()
        )));
    }
    let read = &cut.txn;
    let dest = redb::Database::builder()
        .create(path)
        .map_err(Error::storage)?;
    let mut records = 0;
    records += copy_table(read, &dest, DATA)?;
    copy_table(read, &dest, EXPIRY)?;
    copy_table(read, &dest, crate::query::index::INDEX)?;
    copy_table(read, &dest, META)?;
    let mut txn = dest.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    if !cut.layer.is_empty() {
        let mut added: i64 = 0;
        {
            let mut applier = Applier::new(&txn, indexes, codec)?;
            let data = read.open_table(DATA)?;
            for (key, entry) in cut.layer.map.iter() {
                let before = data.get(key.as_slice())?.is_some();
                match entry.record() {
                    Some(record) => {
                        applier.apply(&Planned {
                            op: WalOp::Put {
                                key: key.clone(),
                                record: record.to_vec(),
                            },
                            index_entries: entry.index_entries().to_vec(),
                            expires_at: entry.expires_at(),
                        })?;
                        added += i64::from(!before);
                    }
                    None => {
                        applier.apply(&Planned {
                            op: WalOp::Remove { key: key.clone() },
                            index_entries: Vec::new(),
                            expires_at: None,
                        })?;
                        added -= i64::from(before);
                    }
                }
            }
        }
        records = (records as i64 + added).max(0) as u64;
        let meta_etag = {
            let meta = txn.open_table(META)?;
            read_u64(&meta, META_ETAG_SEQ)?.unwrap_or(0)
        };
        store_etag_sequence(&txn, meta_etag.max(cut.layer.last_etag))?;
        store_wal_seq(&txn, cut.layer.last_seq)?;
    }
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
