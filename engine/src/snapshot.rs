//! Snapshots: a consistent copy of a keyspace into a new file while it stays in use (backups,
//! `roost compact`).

use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use crate::apply::Applier;
use crate::codec::Codec;
use crate::error::Error;
use crate::meta;
use crate::overlay::Planned;
use crate::query::index::IndexDef;
use crate::read::Cut;
use crate::tables::{DATA, EXPIRY, INDEX, META};
use crate::wal::WalOp;

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
    copy_table(read, &dest, INDEX)?;
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
            meta::read_u64(&meta, meta::ETAG_SEQ)?.unwrap_or(0)
        };
        meta::store_etag_sequence(&txn, meta_etag.max(cut.layer.last_etag))?;
        meta::store_wal_seq(&txn, cut.layer.last_seq)?;
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
