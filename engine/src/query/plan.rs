//! Running a query: pick an access path, then produce one page.
//!
//! Access paths, tried in order (unless `force_full_scan`):
//! 1. **index filter**: the whole filter, or one child of a top-level AND, is `EQ`/`IN` on an
//!    indexed path with scalar literals, or `GT`/`GTE`/`LT`/`LTE` with a number or string; the
//!    index yields the candidate keys (EQ preferred over IN over ranges);
//! 2. **index order**: one sort key on an indexed path; the index is walked in sort order;
//! 3. **full scan** of the records in key order.
//!
//! Every candidate is then checked in full: live (not expired), JSON, and matching the whole
//! filter. So an index only narrows or orders the work; answers are identical with and
//! without it (a property test checks this).
//!
//! Order: by the sort keys ([`value::sort_cmp`]), ties broken by record key, ascending unless
//! the last sort key is `DESC`; without sort keys, by record key. Pages are keyset pages: the
//! token holds the last row's sort values and key, and the next page starts strictly after it.

use std::cmp::Ordering;
use std::ops::Bound;

use serde_json::Value;

use crate::error::Error;
use crate::etag::Etag;
use crate::overlay::Layer;
use crate::query::index::{INDEX, IndexDef, entry_key};
use crate::query::value::{self, TAG_MISSING, TAG_NUMBER, TAG_OTHER};
use crate::query::{CmpOp, Filter, Query, QueryPage, QueryRow, SortKey, token};
use crate::read::{self, Cut};
use crate::record;
use crate::tables::DATA;

/// A range of index keys, as bounds.
type BoundRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);
/// A range of index keys `[start, end)`, `None` = unbounded.
type KeyRange = (Option<Vec<u8>>, Option<Vec<u8>>);
/// Reads and checks one record by key.
type Fetch<'a> = dyn Fn(&[u8]) -> Result<Option<Candidate>, Error> + 'a;

/// A matching row with the values it sorts by.
struct Candidate {
    row: QueryRow,
    sort_values: Vec<Option<Value>>,
}

fn row_size(row: &QueryRow) -> usize {
    row.key.len() + row.value.len() + 24 + row.content_type.as_ref().map_or(0, String::len)
}

/// Compares two positions in the result order.
fn position_cmp(
    sort: &[SortKey],
    a: (&[Option<Value>], &[u8]),
    b: (&[Option<Value>], &[u8]),
) -> Ordering {
    for (i, key) in sort.iter().enumerate() {
        let o = value::sort_cmp(a.0[i].as_ref(), b.0[i].as_ref(), key.descending);
        if o.is_ne() {
            return o;
        }
    }
    let keys = a.1.cmp(b.1);
    if sort.last().is_some_and(|k| k.descending) {
        keys.reverse()
    } else {
        keys
    }
}

pub(crate) fn execute(
    cut: &Cut,
    indexes: &[IndexDef],
    codec: &crate::codec::Codec,
    query: &Query,
    now_ms: u64,
) -> Result<QueryPage, Error> {
    let after = match &query.token {
        Some(t) => Some(token::decode(t, query.sort.len())?),
        None => None,
    };
    let txn = &cut.txn;
    let layer = &cut.layer;
    let data = txn.open_table(DATA)?;
    // Only the members the filter and the sort read are built; the rest is validated and
    // skipped.
    let wanted = super::project::Wanted::of(query);
    let check = |key: &[u8], stored: &[u8]| -> Result<Option<Candidate>, Error> {
        let view = record::decode(stored)?;
        if !view.is_live(now_ms) {
            return Ok(None);
        }
        let plain = codec.open(key, &view)?;
        let Ok(doc) = wanted.parse(&plain) else {
            return Ok(None);
        };
        if !query.filter.matches(&doc) {
            return Ok(None);
        }
        let sort_values = query
            .sort
            .iter()
            .map(|k| value::lookup(&doc, &k.segments).cloned())
            .collect();
        Ok(Some(Candidate {
            row: QueryRow {
                key: key.to_vec(),
                value: plain.into_owned(),
                etag: Etag::new(view.etag),
                content_type: view.content_type.map(str::to_owned),
            },
            sort_values,
        }))
    };
    // The record's newest state: the overlay's, else redb's.
    let fetch = |key: &[u8]| -> Result<Option<Candidate>, Error> {
        match read::stored(layer, &data, key)? {
            Some(stored) => check(key, stored.bytes()),
            None => Ok(None),
        }
    };

    let index_of = |segments: &[String]| indexes.iter().find(|d| d.segments.as_slice() == segments);
    if !query.force_full_scan {
        if let Some((index, condition)) = indexable_condition(&query.filter, &index_of) {
            let table = txn.open_table(INDEX)?;
            let mut keys = Vec::new();
            for (start, end) in condition_ranges(index, condition) {
                let range = (owned(bound(&start)), owned(bound(&end)));
                for entry in merged_entries(&table, layer, &range, false)? {
                    let entry = entry?;
                    let key = entry_key(&entry)
                        .ok_or_else(|| Error::Corrupted("malformed index entry".into()))?;
                    keys.push(key.to_vec());
                }
            }
            keys.sort();
            keys.dedup();
            let candidates = keys.iter().filter_map(|k| fetch(k).transpose());
            return page_from_unordered(query, after, candidates);
        }
        if let [sort_key] = query.sort.as_slice()
            && let Some(index) = index_of(&sort_key.segments)
        {
            return index_order_page(cut, index, sort_key, query, after, &fetch);
        }
    }
    let scan = read::merged_range(layer, &data, Bound::Unbounded)?
        .filter_map(|item| item.and_then(|(k, v)| check(&k, v.bytes())).transpose());
    page_from_unordered(query, after, scan)
}

/// Builds a page from candidates arriving in key order.
fn page_from_unordered(
    query: &Query,
    after: Option<(Vec<Option<Value>>, Vec<u8>)>,
    candidates: impl Iterator<Item = Result<Candidate, Error>>,
) -> Result<QueryPage, Error> {
    if query.sort.is_empty() {
        // Key order is already the result order: stream.
        let after_key = after.map(|(_, key)| key);
        let rest = candidates.filter(|c| match (c, &after_key) {
            (Ok(c), Some(key)) => c.row.key.as_slice() > key.as_slice(),
            _ => true,
        });
        return take_page(query, rest);
    }
    let mut all = candidates.collect::<Result<Vec<_>, _>>()?;
    all.sort_by(|a, b| {
        position_cmp(
            &query.sort,
            (&a.sort_values, &a.row.key),
            (&b.sort_values, &b.row.key),
        )
    });
    let start = match &after {
        Some((values, key)) => all.partition_point(|c| {
            position_cmp(&query.sort, (&c.sort_values, &c.row.key), (values, key)).is_le()
        }),
        None => 0,
    };
    take_page(query, all.into_iter().skip(start).map(Ok))
}

/// Takes rows in order until the limit or the byte budget; a token if anything follows.
fn take_page(
    query: &Query,
    mut ordered: impl Iterator<Item = Result<Candidate, Error>>,
) -> Result<QueryPage, Error> {
    let mut page = QueryPage::default();
    let mut bytes = 0;
    let mut last: Option<Candidate> = None;
    for candidate in ordered.by_ref() {
        let candidate = candidate?;
        let size = row_size(&candidate.row);
        let over_limit = query.limit > 0 && page.rows.len() >= query.limit;
        let over_budget = query.max_response_bytes > 0
            && !page.rows.is_empty()
            && bytes + size > query.max_response_bytes;
        if over_limit || over_budget {
            // Something follows the page: hand out a token at its last row.
            if let Some(last) = &last {
                page.token = Some(token::encode(&last.sort_values, &last.row.key));
            }
            return Ok(page);
        }
        bytes += size;
        page.rows.push(candidate.row.clone());
        last = Some(candidate);
    }
    Ok(page)
}

/// Walks an index in the order of its (single) sort key.
fn index_order_page(
    cut: &Cut,
    index: &IndexDef,
    sort_key: &SortKey,
    query: &Query,
    after: Option<(Vec<Option<Value>>, Vec<u8>)>,
    fetch: &Fetch<'_>,
) -> Result<QueryPage, Error> {
    let table = cut.txn.open_table(INDEX)?;
    let prefix = index.prefix();
    let with = |tail: &[u8]| [prefix.as_slice(), tail].concat();
    let present_start = Bound::Included(with(&[TAG_NUMBER]));
    let present_end = Bound::Excluded(with(&[TAG_OTHER + 1]));
    let missing_from = with(&[TAG_MISSING]);
    let missing_start = Bound::Included(missing_from.clone());
    let missing_end = prefix_end(&missing_from).map_or(Bound::Unbounded, Bound::Excluded);
    // Walk order: present values, then missing ones (each part backwards when descending),
    // resuming strictly after the token's position.
    let parts: Vec<BoundRange> = match after {
        None => vec![(present_start, present_end), (missing_start, missing_end)],
        Some((values, key)) => {
            let mut pos = prefix.clone();
            value::encode_sortable(values[0].as_ref(), &mut pos);
            pos.extend_from_slice(&key);
            let in_missing = pos >= missing_from;
            match (sort_key.descending, in_missing) {
                (false, false) => vec![
                    (Bound::Excluded(pos), present_end),
                    (missing_start, missing_end),
                ],
                (false, true) => vec![(Bound::Excluded(pos), missing_end)],
                (true, false) => vec![
                    (present_start, Bound::Excluded(pos)),
                    (missing_start, missing_end),
                ],
                (true, true) => vec![(missing_start, Bound::Excluded(pos))],
            }
        }
    };
    let mut keys_in_order = Vec::new();
    let limit_hint = if query.limit > 0 {
        Some(query.limit)
    } else {
        None
    };
    let mut produced = 0usize;
    'walk: for (lo, hi) in parts {
        for entry in merged_entries(&table, &cut.layer, &(lo, hi), sort_key.descending)? {
            let entry = entry?;
            let key = entry_key(&entry)
                .ok_or_else(|| Error::Corrupted("malformed index entry".into()))?
                .to_vec();
            if let Some(candidate) = fetch(&key)? {
                // Only the entry matching the record's current value counts: an entry left
                // behind by an unreadable old version must not place the row twice or out
                // of order.
                let mut current = prefix.clone();
                value::encode_sortable(candidate.sort_values[0].as_ref(), &mut current);
                current.extend_from_slice(&key);
                if current != entry {
                    continue;
                }
                keys_in_order.push(candidate);
                produced += 1;
                // One row beyond the limit tells whether a token is needed.
                if limit_hint.is_some_and(|l| produced > l) {
                    break 'walk;
                }
            }
        }
    }
    take_page(query, keys_in_order.into_iter().map(Ok))
}

/// Index entries in `range` from redb's index and the overlay's (the entries of unapplied
/// records) merged in order — descending when asked — each entry once. Entries redb still
/// holds for a key whose newest state is in the overlay are stale; callers re-check every
/// candidate against its record.
fn merged_entries<'a>(
    table: &'a redb::ReadOnlyTable<&'static [u8], ()>,
    layer: &'a Layer,
    range: &BoundRange,
    descending: bool,
) -> Result<Entries<'a>, Error> {
    let stored = table.range::<&[u8]>((as_ref(&range.0), as_ref(&range.1)))?;
    let stored: Entries<'a> = {
        let map = |e: Result<
            (
                redb::AccessGuard<'a, &'static [u8]>,
                redb::AccessGuard<'a, ()>,
            ),
            redb::StorageError,
        >| { e.map(|(k, _)| k.value().to_vec()).map_err(Error::from) };
        if descending {
            Box::new(stored.rev().map(map))
        } else {
            Box::new(stored.map(map))
        }
    };
    if layer.index.is_empty() {
        return Ok(stored);
    }
    let unapplied = layer.index.range((range.0.clone(), range.1.clone()));
    let unapplied: Box<dyn Iterator<Item = &'a Vec<u8>> + 'a> = if descending {
        Box::new(unapplied.rev())
    } else {
        Box::new(unapplied)
    };
    let mut stored = stored.peekable();
    let mut unapplied = unapplied.peekable();
    Ok(Box::new(std::iter::from_fn(move || {
        let take_unapplied = match (stored.peek(), unapplied.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) => return stored.next(),
            (Some(Ok(_)), None) => false,
            (None, Some(_)) => true,
            (Some(Ok(s)), Some(u)) => {
                if s == *u {
                    stored.next();
                    true
                } else {
                    (u.as_slice() < s.as_slice()) != descending
                }
            }
        };
        if take_unapplied {
            unapplied.next().map(|e| Ok(e.clone()))
        } else {
            stored.next()
        }
    })))
}

/// Index entries in walk order.
type Entries<'a> = Box<dyn Iterator<Item = Result<Vec<u8>, Error>> + 'a>;

fn owned(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(b) => Bound::Included(b.to_vec()),
        Bound::Excluded(b) => Bound::Excluded(b.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn as_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(b) => Bound::Included(b.as_slice()),
        Bound::Excluded(b) => Bound::Excluded(b.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn bound(b: &Option<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Some(b) => Bound::Included(b.as_slice()),
        None => Bound::Unbounded,
    }
}

/// A scalar literal the index can look up, with whether ranges apply to it.
fn indexable_literal(literal: &Value, op: CmpOp) -> bool {
    match op {
        CmpOp::Eq => matches!(
            literal,
            Value::Number(_) | Value::String(_) | Value::Bool(_) | Value::Null
        ),
        CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte => {
            matches!(literal, Value::Number(_) | Value::String(_))
        }
        CmpOp::Neq => false,
    }
}

fn rank(filter: &Filter) -> u8 {
    match filter {
        Filter::Cmp { op: CmpOp::Eq, .. } => 0,
        Filter::In { .. } => 1,
        _ => 2,
    }
}

/// The condition an index can serve: the filter itself or a child of a top-level AND.
fn indexable_condition<'f, 'i>(
    filter: &'f Filter,
    index_of: &dyn Fn(&[String]) -> Option<&'i IndexDef>,
) -> Option<(&'i IndexDef, &'f Filter)> {
    let usable = |f: &'f Filter| -> Option<(&'i IndexDef, &'f Filter)> {
        match f {
            Filter::Cmp { op, path, literal } if indexable_literal(literal, *op) => {
                index_of(path).map(|i| (i, f))
            }
            Filter::In { path, values }
                if values.iter().all(|v| indexable_literal(v, CmpOp::Eq)) =>
            {
                index_of(path).map(|i| (i, f))
            }
            _ => None,
        }
    };
    match filter {
        Filter::And(children) => children
            .iter()
            .filter_map(usable)
            .min_by_key(|(_, f)| rank(f)),
        other => usable(other),
    }
}

/// The smallest byte string greater than every string starting with `bytes`.
fn prefix_end(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// Index key ranges `[start, end)` (`None` = unbounded) holding every candidate.
fn condition_ranges(index: &IndexDef, condition: &Filter) -> Vec<KeyRange> {
    let prefix = index.prefix();
    let encoded = |v: &Value| {
        let mut out = prefix.clone();
        value::encode_sortable(Some(v), &mut out);
        out
    };
    let exact = |v: &Value| {
        let start = encoded(v);
        let end = prefix_end(&start);
        (Some(start), end)
    };
    match condition {
        Filter::In { values, .. } => values.iter().map(exact).collect(),
        Filter::Cmp { op, literal, .. } => {
            let tag = value::tag(Some(literal));
            let type_start = Some([prefix.as_slice(), &[tag]].concat());
            let type_end = Some([prefix.as_slice(), &[tag + 1]].concat());
            let at = encoded(literal);
            match op {
                CmpOp::Eq => vec![exact(literal)],
                CmpOp::Gt => vec![(prefix_end(&at), type_end)],
                CmpOp::Gte => vec![(Some(at), type_end)],
                CmpOp::Lt => vec![(type_start, Some(at))],
                CmpOp::Lte => vec![(type_start, prefix_end(&at))],
                CmpOp::Neq => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
