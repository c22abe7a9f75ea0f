//! The stores under test, each doing per operation what its Dapr state component does
//! (`docs/dapr.md`, "The stores we compare with"), behind one client trait.

use std::future::Future;
use std::pin::Pin;

pub mod daprd;
pub mod postgres;
pub mod redis;
pub mod roost;
pub mod sqlite;

/// The JSON field the query workloads filter on.
pub const QUERY_FIELD: &str = "city";

/// A boxed operation future; one allocation per operation is noise next to a round trip.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'a>>;

/// Why an operation did not succeed.
#[derive(Debug, Clone)]
pub enum OpError {
    /// An etag or first-write condition did not hold (what Dapr reports as an etag mismatch,
    /// or for PostgreSQL first-write, "no item was updated").
    Conflict,
    /// Anything else; the text is kept for the report.
    Failed(String),
}

impl OpError {
    pub fn failed(err: impl std::fmt::Display) -> OpError {
        OpError::Failed(err.to_string())
    }
}

/// A stored value and its etag.
pub type Item = (Vec<u8>, String);

/// One client connection of a target, owned by one worker (Roost's socket clients share one
/// HTTP/2 connection, as daprd does with a component).
pub trait Client: Send + Sync {
    /// The cheapest round trip the store's protocol has (the transport floor): Roost's
    /// `Ping` RPC, Redis `PING`, PostgreSQL `SELECT 1`; nothing in process.
    fn ping(&self) -> Fut<'_, ()>;
    /// Dapr `Get`; `None` when the key has no live value.
    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>>;
    /// Dapr `Set`: with `etag`, a conditional update; with `first_write` and no etag, an
    /// insert that fails on a live key. `Err(Conflict)` when the condition does not hold.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()>;
    /// Dapr `BulkGet`; returns how many keys were found.
    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize>;
    /// Dapr `Multi` / `Transact` of unconditional sets.
    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()>;
    /// Dapr `Query` with one filter, `{"EQ": {QUERY_FIELD: value}}`; returns the number of
    /// rows. `indexed` picks Roost's keyspace with a declared index on the field (the other
    /// stores have one JSONB table, without field indexes, as their components make it).
    fn query_eq<'a>(&'a self, value: &'a str, indexed: bool) -> Fut<'a, usize>;
    /// Writes the preloaded keyspace (not timed): `items` in batches.
    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()>;
    /// Writes JSON documents for the query workloads (not timed).
    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()>;
}

/// A version 4 UUID in its text form, as the SQLite component makes etags (random, in the
/// client).
pub fn uuid_v4(rng: &mut crate::Rng) -> String {
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    roost_blackboard::artifact::uuid_v4_text(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_version_4_shape() {
        let mut rng = crate::Rng::new(7);
        let a = uuid_v4(&mut rng);
        let b = uuid_v4(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_eq!(a.matches('-').count(), 4);
    }
}
