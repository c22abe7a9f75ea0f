//! Secondary indexes on declared dot paths.
//!
//! Table `roost_index`, key → `()`. One entry per JSON record per index:
//! `index id (u16 BE) ‖ sortable value (see [`super::value::encode_sortable`]) ‖ record key`.
//! Every JSON record has an entry in every index, including records where the path is missing
//! (tag `0xFF`, sorting last) or holds an array/object, so an index walk visits exactly the
//! JSON records in sort order; records whose value is not JSON have no entries.
//!
//! Entries are written, replaced and removed by [`crate::apply::Applier`] in the same
//! transaction as their record. The declared set is stored in `roost_meta` under `indexes`;
//! at open, newly declared paths are built from the existing records and undeclared ones are
//! deleted.

use redb::{ReadableTable, WriteTransaction};
use serde_json::Value;

use crate::error::Error;
use crate::query::{parse, value};

pub(crate) use crate::tables::INDEX;
/// Records indexed per write transaction while building an index.
const BUILD_BATCH: usize = 5000;

/// A declared index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexDef {
    pub id: u16,
    pub path: String,
    pub segments: Vec<String>,
}

impl IndexDef {
    /// The entry of `doc` (a parsed JSON record) under `key`.
    pub fn entry(&self, doc: &Value, key: &[u8]) -> Vec<u8> {
        let mut out = self.prefix();
        value::encode_sortable(value::lookup(doc, &self.segments), &mut out);
        out.extend_from_slice(key);
        out
    }

    pub fn prefix(&self) -> Vec<u8> {
        self.id.to_be_bytes().to_vec()
    }
}

/// Parses a record value as a JSON document, `None` if it is not JSON.
pub(crate) fn parse_doc(value: &[u8]) -> Option<Value> {
    serde_json::from_slice(value).ok()
}

/// The entries of one record value in every index (none if it is not JSON).
pub(crate) fn entries(indexes: &[IndexDef], key: &[u8], record_value: &[u8]) -> Vec<Vec<u8>> {
    if indexes.is_empty() {
        return Vec::new();
    }
    match parse_doc(record_value) {
        Some(doc) => indexes.iter().map(|index| index.entry(&doc, key)).collect(),
        None => Vec::new(),
    }
}

/// The record key at the end of an index entry.
pub(crate) fn entry_key(entry: &[u8]) -> Option<&[u8]> {
    let value_len = value::encoded_len(entry.get(2..)?)?;
    entry.get(2 + value_len..)
}

/// Brings the stored indexes in line with `declared` paths: builds new ones from existing
/// records, deletes undeclared ones. Returns the active definitions.
pub(crate) fn reconcile(
    db: &redb::Database,
    declared: &[String],
    codec: &crate::codec::Codec,
) -> Result<Vec<IndexDef>, Error> {
    for path in declared {
        parse::parse_path(path)?;
    }
    let txn = db.begin_write()?;
    let stored: Vec<(u16, String)> = {
        let meta = txn.open_table(crate::tables::META)?;
        let raw = meta.get(crate::meta::INDEXES)?.map(|g| g.value().to_vec());
        match raw {
            None => Vec::new(),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupted(format!("index list in roost_meta: {e}")))?,
        }
    };
    let mut active = Vec::new();
    let mut to_build = Vec::new();
    for path in declared {
        if active.iter().any(|d: &IndexDef| &d.path == path) {
            continue;
        }
        let id = match stored.iter().find(|(_, p)| p == path) {
            Some((id, _)) => *id,
            None => {
                let used: Vec<u16> = stored
                    .iter()
                    .map(|(id, _)| *id)
                    .chain(active.iter().map(|d: &IndexDef| d.id))
                    .collect();
                let id = (1..=u16::MAX)
                    .find(|id| !used.contains(id))
                    .ok_or_else(|| Error::InvalidArgument("too many indexes".into()))?;
                to_build.push(id);
                id
            }
        };
        active.push(IndexDef {
            id,
            path: path.clone(),
            segments: parse::parse_path(path)?,
        });
    }
    let unchanged = to_build.is_empty()
        && stored.len() == active.len()
        && active
            .iter()
            .all(|d| stored.iter().any(|(id, p)| *id == d.id && *p == d.path));
    if unchanged {
        txn.abort()?;
        return Ok(active);
    }
    {
        let mut table = txn.open_table(INDEX)?;
        for (id, path) in &stored {
            if !active.iter().any(|d| d.id == *id) {
                tracing::info!(index = %path, "dropping an index that is no longer declared");
                let start = id.to_be_bytes();
                match id.checked_add(1) {
                    Some(next) => table
                        .retain_in::<&[u8], _>(&start[..]..&next.to_be_bytes()[..], |_, _| false)?,
                    None => table.retain_in::<&[u8], _>(&start[..].., |_, _| false)?,
                }
            }
        }
        let list: Vec<(u16, &String)> = active.iter().map(|d| (d.id, &d.path)).collect();
        let mut meta = txn.open_table(crate::tables::META)?;
        let bytes = serde_json::to_vec(&list).map_err(|e| Error::Storage(e.to_string()))?;
        meta.insert(crate::meta::INDEXES, bytes.as_slice())?;
    }
    txn.commit()?;
    let building: Vec<IndexDef> = active
        .iter()
        .filter(|d| to_build.contains(&d.id))
        .cloned()
        .collect();
    if !building.is_empty() {
        build(db, &building, codec)?;
    }
    Ok(active)
}

/// Indexes every existing record for `indexes`, in batches, logging progress.
fn build(
    db: &redb::Database,
    indexes: &[IndexDef],
    codec: &crate::codec::Codec,
) -> Result<(), Error> {
    let paths: Vec<&str> = indexes.iter().map(|d| d.path.as_str()).collect();
    tracing::info!(indexes = ?paths, "building indexes over existing records");
    let mut after: Option<Vec<u8>> = None;
    let mut done = 0usize;
    loop {
        let txn: WriteTransaction = db.begin_write()?;
        let mut last = None;
        let mut count = 0;
        {
            let data = txn.open_table(crate::tables::DATA)?;
            let mut table = txn.open_table(INDEX)?;
            let range = match &after {
                Some(key) => data.range::<&[u8]>((
                    std::ops::Bound::Excluded(key.as_slice()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => data.range::<&[u8]>(..)?,
            };
            for item in range.take(BUILD_BATCH) {
                let (key, record) = item?;
                let view = crate::record::decode(record.value())?;
                let plain = codec.open(key.value(), &view)?;
                for entry in entries(indexes, key.value(), &plain) {
                    table.insert(entry.as_slice(), ())?;
                }
                last = Some(key.value().to_vec());
                count += 1;
            }
        }
        txn.commit()?;
        done += count;
        if count < BUILD_BATCH {
            break;
        }
        tracing::info!(records = done, "index build progress");
        after = last;
    }
    tracing::info!(records = done, indexes = ?paths, "indexes built");
    Ok(())
}
