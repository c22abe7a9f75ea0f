//! `roost-engine`: Roost's embedded key-value engine on redb, with Dapr's state semantics.
//!
//! - Values are bytes, stored and returned verbatim; each record carries an [`Etag`], an
//!   optional expiry and a content type.
//! - Etags come from one database-wide, strictly increasing sequence, so they never repeat.
//! - Writes follow Dapr's concurrency rules (last-write / first-write, etag checks), alone,
//!   in bulk (per-item outcomes) or in ordered all-or-nothing transactions.
//! - All writes go through one group-commit writer: concurrent requests share one log append
//!   and one fsync. Durability is `Immediate` (acknowledged = on disk, in the write-ahead log;
//!   redb catches up in the background and writers never wait for its checkpoints) or
//!   `Eventual` (bounded loss window).
//! - Expired records are invisible at once and deleted in the background through an expiry
//!   index.
//!
//! ```no_run
//! use roost_engine::{Database, Options, SetRequest};
//! let db = Database::open(Options::new("state.roost"))?;
//! let etag = db.set(SetRequest::new("order-1", br#"{"total":3}"#.to_vec()))?;
//! let record = db.get("order-1")?.expect("just written");
//! assert_eq!(record.etag, etag);
//! db.set(SetRequest::new("order-1", b"4".to_vec()).etag(etag.to_string()))?;
//! # Ok::<(), roost_engine::Error>(())
//! ```
//!
//! [`Database`] blocks; tokio code uses [`AsyncDatabase`]. The on-disk format and the commit
//! protocol are described in `docs/design.md`.

#![deny(clippy::all)]
#![warn(missing_debug_implementations)]

mod apply;
mod catchup;
mod clock;
mod codec;
mod command;
mod database;
mod durability;
mod error;
mod etag;
mod file;
mod id;
mod meta;
pub mod metrics;
mod open;
mod options;
mod overlay;
mod plan;
mod query;
mod read;
mod record;
mod request;
mod snapshot;
mod tables;
mod ttl;
mod wal;
mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{CodecOptions, Compression, EncryptionKey};
pub use database::{
    AsyncDatabase, Database, Stats, database_files, log_files, log_record_bytes, remove_log_files,
};
pub use error::{Error, MismatchReason, Result};
pub use etag::Etag;
pub use id::{uuid_v4, uuid_v4_text};
pub use options::{
    CrashPoint, DEFAULT_CACHE_BYTES, DEFAULT_CHECKPOINT_LOG_BYTES, DEFAULT_MAX_UNAPPLIED_BYTES,
    DEFAULT_WRITEBACK_CHUNK_BYTES, Durability, Limits, Options,
};
pub use query::{CmpOp, Filter, Query, QueryPage, QueryRow, SortKey};
pub use read::{KeyspaceStats, Record, RecordRef, ScanPage};
pub use request::{Concurrency, DeleteRequest, ImportRecord, Operation, SetRequest};
pub use snapshot::SnapshotStats;
pub use ttl::{Ttl, format_rfc3339};
