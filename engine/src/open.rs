//! Opening a database: the file (or a custom storage backend), the format checks, the
//! codec and index set-up, and the replay of the write-ahead log (`docs/design.md` §1, §5b).

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::{ReadableDatabase, ReadableTable, TableHandle};

use crate::apply::{Applier, last_per_key};
use crate::codec::Codec;
use crate::error::Error;
use crate::file::PacedFile;
use crate::meta::{self, DATABASE_FORMAT, FORMAT_MAGIC};
use crate::options::Options;
use crate::query::index::IndexDef;
use crate::tables::{DATA, EXPIRY, INDEX, META};
use crate::wal::{self, Wal, WalOp};

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
/// and marks it open (unclean) until [`meta::mark_clean`] runs at close.
pub(crate) fn open(options: &Options, written_back: &Arc<AtomicU64>) -> Result<Opened, Error> {
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
        // Range write-back is Linux's: elsewhere the file opens as redb opens it.
        if cfg!(target_os = "linux") && options.writeback_chunk_bytes > 0 {
            let file = PacedFile::open(
                path,
                !exists,
                options.writeback_chunk_bytes,
                Arc::clone(written_back),
            )?;
            // On a file with contents this opens it; an empty one is created.
            builder.create_with_backend(file)
        } else if exists {
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
        meta::read_u64(&meta, meta::WAL_SEQ)?.unwrap_or(0)
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
        let ops = batches.iter().flat_map(|batch| batch.ops.iter());
        for op in last_per_key(ops, WalOp::key) {
            applier.replay(op)?;
        }
        let logged_etag = batches
            .iter()
            .map(|batch| batch.last_etag)
            .max()
            .unwrap_or(0);
        // A replay means the last run did not close cleanly: keep the usual gap above
        // every etag it may have handed out.
        *last_etag = (*last_etag).max(logged_etag.saturating_add(ETAG_GAP_AFTER_UNCLEAN_SHUTDOWN));
    }
    meta::store_etag_sequence(&txn, *last_etag)?;
    meta::store_wal_seq(&txn, replayed_seq)?;
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
        let format = meta.get(meta::FORMAT)?.map(|g| g.value().to_vec());
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
                meta.insert(meta::FORMAT, marker.as_slice())?;
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
                let stored = meta::read_u64(&meta, meta::ETAG_SEQ)?.unwrap_or(0);
                let clean = meta.get(meta::CLEAN)?.map(|g| g.value() == [1]);
                last_etag = if clean == Some(false) {
                    stored.saturating_add(ETAG_GAP_AFTER_UNCLEAN_SHUTDOWN)
                } else {
                    stored
                };
            }
        }
        meta.insert(meta::ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
        meta.insert(meta::CLEAN, [0u8].as_slice())?;
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
