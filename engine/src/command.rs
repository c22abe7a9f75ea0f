//! The writer's queue: what [`crate::database::Database`] (and its async face) submit, and where
//! the answer comes back. One submission path for both handles: check on the caller's thread,
//! queue a [`Command`], wait on its [`Reply`].

use flume::Sender;

use crate::error::Error;
use crate::etag::Etag;
use crate::request::{CheckedOp, ImportRecord};

pub(crate) type Reply<T> = Sender<Result<T, Error>>;
/// Per-item results of a bulk request.
pub(crate) type BulkResults = Vec<Result<Option<Etag>, Error>>;

pub(crate) enum Command {
    /// One set or delete.
    Single(CheckedOp, Reply<Option<Etag>>),
    /// Independent operations; each succeeds or fails alone.
    Bulk(Vec<CheckedOp>, Reply<BulkResults>),
    /// Operations applied in order, all or nothing.
    Transaction(Vec<CheckedOp>, Reply<Vec<Option<Etag>>>),
    /// Re-encode records after a key (up to a count) under the current codec settings.
    Rewrite(Option<Vec<u8>>, usize, Reply<(usize, Option<Vec<u8>>)>),
    /// Write records exactly as exported.
    Import(Vec<ImportRecord>, Reply<usize>),
    /// Delete up to this many expired records.
    Sweep(usize, Reply<usize>),
    /// Make every acknowledged write durable before answering.
    Sync(Reply<()>),
    /// Finish the queue, flush, mark the file clean and stop.
    Shutdown(Reply<()>),
}
