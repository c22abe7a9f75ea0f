//! The layout of a Roost database file: its redb tables (see `docs/design.md` §1 for the byte
//! layouts). Invariant kept by [`crate::apply::Applier`]: a record and its expiry-index and
//! secondary-index entries are written, replaced or removed together, in one write transaction.
//!
//! - `roost_data`: key bytes → record envelope ([`crate::record`]);
//! - `roost_expiry`: expiry index, `expiry_ms (u64 BE) ‖ key` → `()`; it holds exactly one entry
//!   per record with an expiry, so the sweeper finds expired records by a range scan;
//! - `roost_index`: secondary indexes ([`crate::query::index`]);
//! - `roost_meta`: named values, all owned by [`crate::meta`].

use redb::TableDefinition;

pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("roost_data");
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("roost_expiry");
pub(crate) const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("roost_index");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("roost_meta");

/// Expiry-index key: `expiry_ms (u64 BE) ‖ key`, so entries sort by expiry.
pub(crate) fn expiry_key(expires_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}
