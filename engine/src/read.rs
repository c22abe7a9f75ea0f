//! Reads: every read path looks at the table of unapplied writes ([`crate::overlay`]) first,
//! then at redb, through one consistent cut of the two.

use std::sync::Arc;

use redb::ReadableTableMetadata;

use crate::codec::Codec;
use crate::error::Error;
use crate::etag::Etag;
use crate::overlay::{DataTable, Entry, Layer, Overlay};
use crate::record::{self, RecordView};
use crate::tables::{DATA, EXPIRY, INDEX, expiry_key};

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

    /// The record borrowed, as a bulk read's visitor sees it.
    pub fn as_record_ref(&self) -> RecordRef<'_> {
        RecordRef {
            value: &self.value,
            etag: self.etag,
            expires_at_unix_ms: self.expires_at_unix_ms,
            content_type: self.content_type.as_deref(),
        }
    }

    pub(crate) fn from_view(view: RecordView<'_>, value: Vec<u8>) -> Record {
        Record {
            value,
            etag: Etag::new(view.etag),
            expires_at_unix_ms: view.expires_at_ms,
            content_type: view.content_type.map(str::to_owned),
        }
    }
}

/// A live record borrowed for one call of a [`crate::Database::bulk_get_each`] visitor: its
/// value is the stored bytes themselves (or the opened copy, when compressed or encrypted),
/// not a copy of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The value, byte for byte as written.
    pub value: &'a [u8],
    pub etag: Etag,
    /// When the record expires, in Unix milliseconds.
    pub expires_at_unix_ms: Option<u64>,
    pub content_type: Option<&'a str>,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            value: self.value.to_vec(),
            etag: self.etag,
            expires_at_unix_ms: self.expires_at_unix_ms,
            content_type: self.content_type.map(str::to_owned),
        }
    }

    /// The expiry as RFC 3339 UTC (Dapr's `ttlExpireTime`), if the record has one.
    pub fn expire_time_rfc3339(&self) -> Option<String> {
        self.expires_at_unix_ms.map(crate::ttl::format_rfc3339)
    }
}

/// One consistent cut: the overlay's state and a redb snapshot taken together.
pub(crate) struct Cut {
    pub layer: Layer,
    pub txn: redb::ReadTransaction,
}

impl Cut {
    pub fn take(db: &redb::Database, overlay: &Overlay) -> Result<Cut, Error> {
        let (layer, txn) = overlay.snapshot(db)?;
        Ok(Cut { layer, txn })
    }
}

/// Where a key's stored record bytes are in a cut (point lookups and merged ranges).
pub(crate) enum Stored<'t> {
    Overlay(Arc<Entry>),
    Redb(redb::AccessGuard<'t, &'static [u8]>),
}

impl Stored<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Stored::Overlay(entry) => entry.record().expect("only records are returned"),
            Stored::Redb(guard) => guard.value(),
        }
    }
}

/// The sealed record stored under `key` in the cut (overlay first), if any.
pub(crate) fn stored<'t>(
    layer: &Layer,
    data: &'t redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Stored<'t>>, Error> {
    if let Some(entry) = layer.map.get(key) {
        return Ok(entry
            .record()
            .is_some()
            .then(|| Stored::Overlay(Arc::clone(entry))));
    }
    Ok(data.get(key)?.map(Stored::Redb))
}

fn live_record(
    codec: &Codec,
    key: &[u8],
    bytes: &[u8],
    now_ms: u64,
) -> Result<Option<Record>, Error> {
    let view = record::decode(bytes)?;
    if !view.is_live(now_ms) {
        return Ok(None);
    }
    let value = codec.open(key, &view)?.into_owned();
    Ok(Some(Record::from_view(view, value)))
}

/// Reads the live record under `key` (one key: no vectors, unlike [`read_many`]).
pub(crate) fn read_one(
    db: &redb::Database,
    overlay: &Overlay,
    codec: &Codec,
    key: &[u8],
    now_ms: u64,
) -> Result<Option<Record>, Error> {
    in_newest(db, overlay, key, |bytes| {
        live_record(codec, key, bytes, now_ms)
    })
}

/// The etag of the live record under `key` now, if there is one: what a write's condition is
/// checked against (decoding the record's header only, not its value).
pub(crate) fn live_etag(
    db: &redb::Database,
    overlay: &Overlay,
    key: &[u8],
    now_ms: u64,
) -> Result<Option<u64>, Error> {
    in_newest(db, overlay, key, |bytes| {
        let view = record::decode(bytes)?;
        Ok(view.is_live(now_ms).then_some(view.etag))
    })
}

/// `found` applied to the sealed record `key` holds now: its overlay entry if it has one, else
/// the newest commit's (one key's [`in_cut`]).
fn in_newest<T>(
    db: &redb::Database,
    overlay: &Overlay,
    key: &[u8],
    found: impl FnOnce(&[u8]) -> Result<Option<T>, Error>,
) -> Result<Option<T>, Error> {
    match overlay.lookup_one(db, key)? {
        Ok(entry) => in_cut(key, Some(&entry), None, found),
        Err(table) => in_cut(key, None, Some(&table), found),
    }
}

/// `found` applied to the sealed record `key` holds in a cut: its overlay entry if it has
/// one, else redb's (`None` when the key holds no record).
fn in_cut<T>(
    key: &[u8],
    entry: Option<&Entry>,
    table: Option<&DataTable>,
    found: impl FnOnce(&[u8]) -> Result<Option<T>, Error>,
) -> Result<Option<T>, Error> {
    match entry {
        Some(entry) => entry.record().map_or(Ok(None), found),
        None => {
            let table = table.expect("a table for every miss");
            match table.get(key)? {
                Some(guard) => found(guard.value()),
                None => Ok(None),
            }
        }
    }
}

/// Calls `each` with every key of `keys` and its live record (None if missing or expired),
/// in order, all from one cut. The record is borrowed from the cut for the call.
pub(crate) fn visit_many(
    db: &redb::Database,
    overlay: &Overlay,
    codec: &Codec,
    keys: &[&[u8]],
    now_ms: u64,
    each: &mut dyn FnMut(&[u8], Option<RecordRef<'_>>),
) -> Result<(), Error> {
    let (found, table) = overlay.lookup(db, keys)?;
    for (&key, entry) in keys.iter().zip(found) {
        let visited = in_cut(key, entry.as_deref(), table.as_deref(), |bytes| {
            let view = record::decode(bytes)?;
            if !view.is_live(now_ms) {
                return Ok(None);
            }
            let value = codec.open(key, &view)?;
            each(
                key,
                Some(RecordRef {
                    value: &value,
                    etag: Etag::new(view.etag),
                    expires_at_unix_ms: view.expires_at_ms,
                    content_type: view.content_type,
                }),
            );
            Ok(Some(()))
        })?;
        if visited.is_none() {
            each(key, None);
        }
    }
    Ok(())
}

/// The records of a cut in key order from `start`: redb's and the overlay's merged, the
/// overlay's state winning, removed keys left out. Yields `(key, sealed record bytes)`.
pub(crate) fn merged_range<'t>(
    layer: &'t Layer,
    data: &'t redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    start: std::ops::Bound<&[u8]>,
) -> Result<impl Iterator<Item = Result<(Vec<u8>, Stored<'t>), Error>> + 't, Error> {
    use std::ops::Bound;
    let redb_start: Bound<&[u8]> = start;
    let mut redb = data
        .range::<&[u8]>((redb_start, Bound::Unbounded))?
        .peekable();
    let overlay_start: Bound<Vec<u8>> = match start {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut over = layer
        .map
        .range((overlay_start, Bound::<Vec<u8>>::Unbounded))
        .peekable();
    Ok(std::iter::from_fn(move || {
        loop {
            // Which side holds the next key, compared in place (no copies of the keys).
            let (take_overlay, same_key) = match (redb.peek(), over.peek()) {
                (Some(Err(_)), _) => {
                    let err = redb.next().expect("peeked").err().expect("an error");
                    return Some(Err(Error::from(err)));
                }
                (None, None) => return None,
                (Some(Ok(_)), None) => (false, false),
                (None, Some(_)) => (true, false),
                (Some(Ok((r, _))), Some((o, _))) => {
                    let r = r.value();
                    (o.as_slice() <= r, o.as_slice() == r)
                }
            };
            if take_overlay {
                let (key, entry) = over.next().expect("peeked");
                if same_key {
                    // The overlay's state replaces redb's record of the key.
                    redb.next();
                }
                if entry.record().is_some() {
                    return Some(Ok((key.clone(), Stored::Overlay(Arc::clone(entry)))));
                }
                // Removed in the overlay: the redb record (if any) is skipped above.
                continue;
            }
            let (key, value) = redb.next().expect("peeked").expect("checked above");
            return Some(Ok((key.value().to_vec(), Stored::Redb(value))));
        }
    }))
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
/// `limit` of them (0 = no limit), from one cut.
pub(crate) fn scan(
    cut: &Cut,
    codec: &Codec,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    now_ms: u64,
) -> Result<ScanPage, Error> {
    use std::ops::Bound;
    let table = cut.txn.open_table(DATA)?;
    let start = match after {
        Some(key) if key >= prefix => Bound::Excluded(key),
        _ => Bound::Included(prefix),
    };
    let mut page = ScanPage::default();
    for item in merged_range(&cut.layer, &table, start)? {
        let (key, stored) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        let view = record::decode(stored.bytes())?;
        if !view.is_live(now_ms) {
            continue;
        }
        if limit > 0 && page.records.len() == limit {
            page.next = page.records.last().map(|(k, _)| k.clone());
            break;
        }
        let value = codec.open(&key, &view)?.into_owned();
        page.records.push((key, Record::from_view(view, value)));
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
    /// Entries in the secondary indexes (of records already applied to the main file).
    pub index_entries: u64,
    /// Acknowledged writes not yet applied to the main file (records or removals).
    pub unapplied: u64,
}

pub(crate) fn keyspace_stats(cut: &Cut, now_ms: u64) -> Result<KeyspaceStats, Error> {
    let data = cut.txn.open_table(DATA)?;
    let mut records = data.len()? as i64;
    let end = expiry_key(now_ms.saturating_add(1), &[]);
    let mut expired_pending = cut
        .txn
        .open_table(EXPIRY)?
        .range::<&[u8]>(..end.as_slice())?
        .count() as i64;
    for (key, entry) in cut.layer.map.iter() {
        let in_redb = data.get(key.as_slice())?;
        if let Some(old) = &in_redb
            && !record::decode(old.value())?.is_live(now_ms)
        {
            expired_pending -= 1;
        }
        match (entry.record(), in_redb.is_some()) {
            (Some(bytes), in_redb) => {
                if !in_redb {
                    records += 1;
                }
                if !record::decode(bytes)?.is_live(now_ms) {
                    expired_pending += 1;
                }
            }
            (None, true) => records -= 1,
            (None, false) => {}
        }
    }
    let index_entries = cut.txn.open_table(INDEX)?.len()?;
    Ok(KeyspaceStats {
        records: records.max(0) as u64,
        expired_pending: expired_pending.max(0) as u64,
        index_entries,
        unapplied: cut.layer.map.len() as u64,
    })
}
