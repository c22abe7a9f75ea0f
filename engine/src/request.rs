//! The write requests the engine accepts: set and delete, alone, in bulk or in transactions.
//!
//! Requests carry the client's etag and `ttlInSeconds` as the client sent them; the engine
//! parses them when the request is submitted, so a malformed one is refused before anything
//! is queued, and in a transaction the error names the operation's index.

use crate::error::Error;
use crate::etag::Etag;
use crate::options::Limits;
use crate::ttl::Ttl;

/// Dapr's concurrency modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Without an etag the write is unconditional (Dapr's default and "unspecified").
    #[default]
    LastWrite,
    /// Without an etag the write only succeeds if the key has no live record.
    FirstWrite,
}

/// Write `value` under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The etag as the client sent it; `None` or `""` means no etag.
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    /// `ttlInSeconds` as the client sent it; `None` means no expiry.
    pub ttl_in_seconds: Option<String>,
    /// Stored and returned with the record; empty means none.
    pub content_type: Option<String>,
}

impl SetRequest {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> SetRequest {
        SetRequest {
            key: key.into(),
            value: value.into(),
            etag: None,
            concurrency: Concurrency::LastWrite,
            ttl_in_seconds: None,
            content_type: None,
        }
    }

    pub fn etag(mut self, etag: impl Into<String>) -> SetRequest {
        self.etag = Some(etag.into());
        self
    }

    pub fn concurrency(mut self, concurrency: Concurrency) -> SetRequest {
        self.concurrency = concurrency;
        self
    }

    pub fn first_write(self) -> SetRequest {
        self.concurrency(Concurrency::FirstWrite)
    }

    /// `ttlInSeconds` as text, exactly as Dapr metadata carries it.
    pub fn ttl_in_seconds(mut self, ttl: impl Into<String>) -> SetRequest {
        self.ttl_in_seconds = Some(ttl.into());
        self
    }

    pub fn ttl(self, ttl: Ttl) -> SetRequest {
        match ttl {
            Ttl::Never => SetRequest {
                ttl_in_seconds: None,
                ..self
            },
            Ttl::Seconds(s) => self.ttl_in_seconds(s.to_string()),
        }
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> SetRequest {
        self.content_type = Some(content_type.into());
        self
    }
}

/// Delete `key`.
///
/// Rules: without an etag, a missing key is fine (nothing happens); with an etag, the key must
/// have a live record with that etag. First-write without an etag refuses to delete a live
/// record (Dapr's in-memory store rule; SQLite ignores the mode), and succeeds on a missing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub key: Vec<u8>,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
}

impl DeleteRequest {
    pub fn new(key: impl Into<Vec<u8>>) -> DeleteRequest {
        DeleteRequest {
            key: key.into(),
            etag: None,
            concurrency: Concurrency::LastWrite,
        }
    }

    pub fn etag(mut self, etag: impl Into<String>) -> DeleteRequest {
        self.etag = Some(etag.into());
        self
    }

    pub fn concurrency(mut self, concurrency: Concurrency) -> DeleteRequest {
        self.concurrency = concurrency;
        self
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Set(SetRequest),
    Delete(DeleteRequest),
}

impl From<SetRequest> for Operation {
    fn from(request: SetRequest) -> Operation {
        Operation::Set(request)
    }
}

impl From<DeleteRequest> for Operation {
    fn from(request: DeleteRequest) -> Operation {
        Operation::Delete(request)
    }
}

/// An operation checked against the limits, with etag and TTL parsed.
#[derive(Debug)]
pub(crate) enum CheckedOp {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        etag: Option<Etag>,
        concurrency: Concurrency,
        ttl: Ttl,
        content_type: Option<String>,
    },
    Delete {
        key: Vec<u8>,
        etag: Option<Etag>,
        concurrency: Concurrency,
    },
}

impl CheckedOp {
    pub fn key(&self) -> &[u8] {
        match self {
            CheckedOp::Set { key, .. } | CheckedOp::Delete { key, .. } => key,
        }
    }
}

pub(crate) fn check_key(key: &[u8], limits: &Limits) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("the key is empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Error::InvalidArgument(format!(
            "the key is {} bytes, above the limit of {} bytes",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

fn parse_etag(etag: Option<&str>) -> Result<Option<Etag>, Error> {
    etag.map_or(Ok(None), Etag::parse)
}

impl SetRequest {
    pub(crate) fn check(self, limits: &Limits) -> Result<CheckedOp, Error> {
        check_key(&self.key, limits)?;
        if self.value.len() > limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "the value is {} bytes, above the limit of {} bytes",
                self.value.len(),
                limits.max_value_bytes
            )));
        }
        let content_type = self.content_type.filter(|ct| !ct.is_empty());
        if let Some(ct) = &content_type
            && ct.len() > Limits::MAX_CONTENT_TYPE_BYTES
        {
            return Err(Error::InvalidArgument(format!(
                "the content type is {} bytes, above the limit of {} bytes",
                ct.len(),
                Limits::MAX_CONTENT_TYPE_BYTES
            )));
        }
        Ok(CheckedOp::Set {
            etag: parse_etag(self.etag.as_deref())?,
            ttl: Ttl::parse(self.ttl_in_seconds.as_deref())?,
            key: self.key,
            value: self.value,
            concurrency: self.concurrency,
            content_type,
        })
    }
}

impl DeleteRequest {
    pub(crate) fn check(self, limits: &Limits) -> Result<CheckedOp, Error> {
        check_key(&self.key, limits)?;
        Ok(CheckedOp::Delete {
            etag: parse_etag(self.etag.as_deref())?,
            key: self.key,
            concurrency: self.concurrency,
        })
    }
}

impl Operation {
    pub(crate) fn check(self, limits: &Limits) -> Result<CheckedOp, Error> {
        match self {
            Operation::Set(request) => request.check(limits),
            Operation::Delete(request) => request.check(limits),
        }
    }
}

/// A record to import exactly as it was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The etag sequence number to keep.
    pub etag: u64,
    pub expires_at_unix_ms: Option<u64>,
    pub content_type: Option<String>,
}
