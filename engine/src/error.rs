//! The one error type of the engine.
//!
//! Every failure a caller can see is a variant of [`Error`]. The variants split into three
//! families that callers treat differently:
//! - *request errors* (`InvalidEtag`, `EtagMismatch`, `InvalidTtl`, `InvalidArgument`,
//!   `Transaction`): the request was refused and nothing was written; retrying the same request
//!   gives the same answer;
//! - *open errors* (`NotARoostDatabase`, `Corrupted`, `UnsupportedFormat`, `AlreadyOpen`);
//! - *storage errors* (`Storage`, `CommitFailed`, `Poisoned`, `Closed`): the request may not
//!   have been applied; after a failed commit the database refuses further writes until it is
//!   reopened, rather than guess what reached the disk.

use std::fmt;

/// Why an etag or first-write check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MismatchReason {
    /// An etag was given, but the key has no live record (never written, deleted or expired).
    NoLiveRecord,
    /// An etag was given, and the live record has a different one.
    EtagDiffers,
    /// First-write concurrency without an etag, and the key has a live record.
    KeyExists,
}

impl fmt::Display for MismatchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MismatchReason::NoLiveRecord => "the key has no live record",
            MismatchReason::EtagDiffers => "the record has a different etag",
            MismatchReason::KeyExists => "first-write refused: the key already has a live record",
        })
    }
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The etag is not a Roost etag (a decimal integer); nothing was written.
    #[error("invalid etag {etag:?}: Roost etags are decimal integers, as returned by a read")]
    InvalidEtag { etag: String },

    /// The etag or first-write condition does not hold; nothing was written.
    #[error("etag mismatch for key {key:?}: {reason}; read the key again and retry")]
    EtagMismatch { key: String, reason: MismatchReason },

    /// The `ttlInSeconds` value is not usable; nothing was written.
    #[error(
        "invalid ttlInSeconds {value:?}: {reason} (use an integer from 1 to 2147483647, or -1 for no expiry)"
    )]
    InvalidTtl { value: String, reason: &'static str },

    /// The query is malformed (the message names the offending part); nothing was read.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// The request breaks a rule or a configured limit (empty key, oversized value, ...).
    #[error("invalid request: {0}")]
    InvalidArgument(String),

    /// Operation `index` (0-based) of a transaction failed; no operation was applied.
    #[error("transaction operation {index} failed, nothing was applied: {source}")]
    Transaction {
        index: usize,
        #[source]
        source: Box<Error>,
    },

    /// The file exists but does not hold a Roost database.
    #[error("{path} is not a Roost database: {detail}")]
    NotARoostDatabase { path: String, detail: String },

    /// The file or a record failed an integrity check.
    #[error("the database is corrupted: {0}; restore it from a backup")]
    Corrupted(String),

    /// The encryption key is missing, wrong, malformed, or a record names a key not configured.
    #[error("encryption key: {0}")]
    EncryptionKey(String),

    /// A record failed authentication (tampered or damaged); nothing of it is returned.
    #[error(
        "record {key:?} failed its integrity check (tampered or damaged); restore it from a backup or overwrite it"
    )]
    Integrity { key: String },

    /// The file was written by a newer Roost with a format this build cannot read.
    #[error(
        "the database format version is {found}, but this build reads up to {supported}; upgrade Roost"
    )]
    UnsupportedFormat { found: u32, supported: u32 },

    /// Another process (or another handle in this one) has the file open.
    #[error("{path} is already open by another Roost process or handle; stop it first")]
    AlreadyOpen { path: String },

    /// An error from the storage layer (I/O, redb).
    #[error("storage error: {0}")]
    Storage(String),

    /// The commit of the batch holding this request failed; the request may not be durable.
    #[error("commit failed, the write was not acknowledged: {0}")]
    CommitFailed(String),

    /// An earlier commit failed; writes are refused until the database is reopened.
    #[error("writes are refused after an earlier commit failed ({0}); reopen the database")]
    Poisoned(String),

    /// The database was closed.
    #[error("the database is closed")]
    Closed,
}

impl Error {
    /// True for the errors that say the request itself was wrong or its condition failed: the
    /// same request will fail the same way, and nothing was written.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidEtag { .. }
                | Error::EtagMismatch { .. }
                | Error::InvalidTtl { .. }
                | Error::InvalidArgument(_)
                | Error::InvalidQuery(_)
                | Error::Transaction { .. }
        )
    }

    /// The innermost error: for a transaction error, the failing operation's error.
    pub fn root(&self) -> &Error {
        match self {
            Error::Transaction { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn mismatch(key: &[u8], reason: MismatchReason) -> Error {
        Error::EtagMismatch {
            key: display_key(key),
            reason,
        }
    }

    pub(crate) fn storage(err: impl Into<redb::Error>) -> Error {
        match err.into() {
            redb::Error::Corrupted(detail) => Error::Corrupted(detail),
            other => Error::Storage(other.to_string()),
        }
    }
}

/// A key as text for messages: lossy UTF-8, cut at 128 characters.
pub(crate) fn display_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if text.chars().count() > 128 {
        let cut: String = text.chars().take(128).collect();
        format!("{cut}…")
    } else {
        text.into_owned()
    }
}

macro_rules! storage_error_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(err: $ty) -> Error {
                Error::storage(err)
            }
        }
    )*};
}

storage_error_from!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;
