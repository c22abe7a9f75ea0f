//! `roost_meta`: every named value a database file keeps besides its records, and the one
//! place that reads and writes them (`docs/design.md` §1).

use redb::{ReadableTable, WriteTransaction};

use crate::error::Error;
use crate::tables::META;

/// `b"roost"` ‖ u32 BE format version: marks the file as a Roost database.
pub(crate) const FORMAT: &str = "format";
/// u64 BE: the highest etag sequence number committed.
pub(crate) const ETAG_SEQ: &str = "etag_seq";
/// One byte: `0` while open, `1` after a clean close.
pub(crate) const CLEAN: &str = "clean";
/// u64 BE: the sequence number of the last write-ahead-log batch included in this state.
pub(crate) const WAL_SEQ: &str = "wal_seq";
/// The keyspace's random id (the codec binds it into every sealed record).
pub(crate) const KEYSPACE_ID: &str = "keyspace_id";
/// A record sealed under the encryption key, to tell a wrong key from damage.
pub(crate) const KEY_CHECK: &str = "key_check";
/// The declared secondary indexes.
pub(crate) const INDEXES: &str = "indexes";

pub(crate) const FORMAT_MAGIC: &[u8; 5] = b"roost";
/// Version of the database layout (tables and their meaning), stored after the magic.
pub(crate) const DATABASE_FORMAT: u32 = 1;

pub(crate) fn read_u64(
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
    meta.insert(ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
    Ok(())
}

/// Records, in the batch's transaction, the write-ahead-log sequence it was logged under.
pub(crate) fn store_wal_seq(txn: &WriteTransaction, seq: u64) -> Result<(), Error> {
    let mut meta = txn.open_table(META)?;
    meta.insert(WAL_SEQ, seq.to_be_bytes().as_slice())?;
    Ok(())
}

/// Marks the file closed cleanly, durably; done last before the database is dropped.
pub(crate) fn mark_clean(db: &redb::Database, last_etag: u64) -> Result<(), Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(ETAG_SEQ, last_etag.to_be_bytes().as_slice())?;
        meta.insert(CLEAN, [1u8].as_slice())?;
    }
    txn.commit()?;
    Ok(())
}
