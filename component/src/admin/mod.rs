//! Administration of one instance's keyspace: the `roost get | set | delete | scan | query |
//! stats | backup` commands, which work offline on the data directory or online through a
//! running `roost serve`, and the offline-only `export | import | rekey | restore | compact`.
//!
//! - [`Keyspace`]: the one interface of the commands that work both ways, implemented by
//!   [`offline::Offline`] (the instance's file opened directly, while no server holds it) and
//!   [`online::Online`] (the server's socket, as daprd connects to it).
//! - [`commands`]: each command, written once against a [`Keyspace`].
//! - [`output`]: the one formatter of records (text and JSON Lines) and progress reporting.
//! - [`offline`]: opening an instance's file, and the offline-only commands.
//! - [`online`]: the client of the admin service and the Dapr services on the socket.
//! - [`service`]: the admin service itself (`proto/roost/admin/v1/admin.proto`), which
//!   `roost serve` runs on the component socket next to the Dapr services.

pub mod commands;
pub mod offline;
pub mod online;
pub mod output;
pub mod service;

use std::path::Path;

use serde_json::Value;

/// One record, as every command prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub etag: String,
    /// When the record expires (Unix milliseconds), if it has a TTL.
    pub expires_at_unix_ms: Option<u64>,
    pub content_type: Option<String>,
}

/// A write of one record (`roost set`).
#[derive(Debug, Clone, Default)]
pub struct Write {
    pub key: String,
    pub value: Vec<u8>,
    /// Write only if the record holds this etag.
    pub etag: Option<String>,
    /// `ttlInSeconds`, as Dapr's metadata carries it.
    pub ttl_in_seconds: Option<String>,
    pub content_type: Option<String>,
}

/// One row of a query's answer.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    pub value: Vec<u8>,
    pub etag: String,
}

/// A query's page of rows, and the token of the next page.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    pub rows: Vec<Row>,
    pub token: Option<String>,
}

/// The commands that work offline and online, on one instance's keyspace. Errors are the
/// messages the command prints.
pub trait Keyspace {
    /// The record at `key`, or `None`.
    fn get(&mut self, key: &str) -> Result<Option<Record>, String>;
    /// Writes one record; returns the etag this write produced.
    fn set(&mut self, write: Write) -> Result<String, String>;
    fn delete(&mut self, key: &str, etag: Option<String>) -> Result<(), String>;
    /// Calls `each` for up to `limit` records (0: all) whose key starts with `prefix`, in key
    /// order; returns whether more records follow.
    fn scan(
        &mut self,
        prefix: &str,
        limit: usize,
        each: &mut dyn FnMut(Record) -> Result<(), String>,
    ) -> Result<bool, String>;
    /// Runs a state query (`{"filter":…,"sort":…,"page":…}`).
    fn query(&mut self, query_json: &str) -> Result<QueryPage, String>;
    /// Record counts, file size and configuration (no secrets).
    fn stats(&mut self) -> Result<Value, String>;
    /// A consistent snapshot of the keyspace into the new file `out`, reporting progress on
    /// stderr; returns (records, bytes).
    fn backup(&mut self, out: &Path) -> Result<(u64, u64), String>;
}
