//! The store contract (Flock's `BlackboardStore`, with its loose ends pinned down) and its
//! implementations: in memory, the embedded engine, and any Dapr state store (`dapr` feature).
//!
//! Semantics every store keeps:
//! - `publish` is an upsert by id;
//! - order is `(created_at, id)`;
//! - a filter's `tags` require **all** the tags (a subscription's tags require any);
//! - `limit == 0` means no limit; `query` returns the page and the total;
//! - `publish_outputs` writes the outputs of an agent run and the consumption records of its
//!   inputs together: outputs first, and all-or-nothing where the store has transactions, so a
//!   crash never leaves inputs marked consumed without their outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use crate::artifact::{Artifact, Consumption};
use crate::error::Result;
use crate::time::Timestamp;

#[cfg(feature = "dapr")]
pub mod dapr;
pub mod embedded;
pub mod memory;

#[cfg(feature = "dapr")]
pub use dapr::{DaprCapabilities, DaprStore};
pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;

// The key layout of the stores on a key-value keyspace (embedded, Dapr):
// `artifact:{id}` and `consumption:{artifact id}:{consumer}:{run id}`.

pub(crate) fn artifact_key(id: &str) -> String {
    format!("artifact:{id}")
}

pub(crate) fn consumption_prefix(artifact_id: &str) -> String {
    format!("consumption:{artifact_id}:")
}

pub(crate) fn consumption_key(record: &Consumption) -> String {
    format!(
        "{}{}:{}",
        consumption_prefix(&record.artifact_id),
        record.consumer,
        record.run_id.as_deref().unwrap_or("")
    )
}

/// A boxed store future.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Which artifacts a query selects; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Any of these types.
    pub type_names: Option<BTreeSet<String>>,
    /// Produced by any of these.
    pub produced_by: Option<BTreeSet<String>>,
    pub correlation_id: Option<String>,
    /// Carrying **all** these tags.
    pub tags: Option<BTreeSet<String>>,
    /// Visibility of any of these kinds (`Public`, `Private`, ...).
    pub visibility_kinds: Option<BTreeSet<String>>,
    /// `created_at >= start`.
    pub start: Option<Timestamp>,
    /// `created_at <= end`.
    pub end: Option<Timestamp>,
}

impl Filter {
    pub fn of_type(type_name: impl Into<String>) -> Filter {
        Filter {
            type_names: Some([type_name.into()].into()),
            ..Filter::default()
        }
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Filter {
        self.correlation_id = Some(id.into());
        self
    }

    /// Whether `artifact` passes (the reference every store's answers must equal); an
    /// expired artifact never does.
    pub fn matches(&self, artifact: &Artifact) -> bool {
        let within = |set: &Option<BTreeSet<String>>, value: &str| {
            set.as_ref().is_none_or(|set| set.contains(value))
        };
        within(&self.type_names, &artifact.type_name)
            && within(&self.produced_by, &artifact.produced_by)
            && within(&self.visibility_kinds, artifact.visibility.kind())
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|id| artifact.correlation_id.as_ref() == Some(id))
            && self
                .tags
                .as_ref()
                .is_none_or(|tags| tags.is_subset(&artifact.tags))
            && self.start.is_none_or(|start| artifact.created_at >= start)
            && self.end.is_none_or(|end| artifact.created_at <= end)
            && !artifact.expired(Timestamp::now())
    }
}

/// One page of a query and the number of artifacts the filter selects in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub artifacts: Vec<Artifact>,
    pub total: usize,
}

/// Aggregates over the artifacts a filter selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    pub by_type: BTreeMap<String, usize>,
    pub by_producer: BTreeMap<String, usize>,
    pub by_visibility: BTreeMap<String, usize>,
    pub tag_counts: BTreeMap<String, usize>,
    pub earliest_created_at: Option<Timestamp>,
    pub latest_created_at: Option<Timestamp>,
}

impl Summary {
    pub fn add(&mut self, artifact: &Artifact) {
        self.total += 1;
        *self.by_type.entry(artifact.type_name.clone()).or_default() += 1;
        *self
            .by_producer
            .entry(artifact.produced_by.clone())
            .or_default() += 1;
        *self
            .by_visibility
            .entry(artifact.visibility.kind().to_string())
            .or_default() += 1;
        for tag in &artifact.tags {
            *self.tag_counts.entry(tag.clone()).or_default() += 1;
        }
        let at = artifact.created_at;
        self.earliest_created_at = Some(self.earliest_created_at.map_or(at, |e| e.min(at)));
        self.latest_created_at = Some(self.latest_created_at.map_or(at, |l| l.max(at)));
    }
}

/// Where artifacts live. Agent code never sees which implementation it runs on.
pub trait BlackboardStore: Send + Sync {
    /// Upserts an artifact by id.
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()>;

    /// Persists an agent run's outputs, then the consumption records of its inputs (see the
    /// module docs).
    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()>;

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>>;

    /// Artifacts of one type, in `(created_at, id)` order.
    fn list_by_type<'a>(&'a self, type_name: &'a str) -> StoreFuture<'a, Vec<Artifact>> {
        Box::pin(async move {
            Ok(self
                .query(&Filter::of_type(type_name), 0, 0)
                .await?
                .artifacts)
        })
    }

    /// A page of the artifacts `filter` selects, in `(created_at, id)` order, skipping
    /// `offset`; `limit == 0` means all. Returns the total as well.
    fn query<'a>(
        &'a self,
        filter: &'a Filter,
        limit: usize,
        offset: usize,
    ) -> StoreFuture<'a, Page>;

    /// Appends consumption records.
    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()>;

    /// The consumption records of one artifact.
    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>>;

    fn summary<'a>(&'a self, filter: &'a Filter) -> StoreFuture<'a, Summary> {
        Box::pin(async move {
            let page = self.query(filter, 0, 0).await?;
            let mut summary = Summary::default();
            for artifact in &page.artifacts {
                summary.add(artifact);
            }
            Ok(summary)
        })
    }
}

/// A coordination record beside the artifacts (a claim, a feed slot), with its etag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub etag: String,
}

/// What a conditional write expects to find under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: the write is unconditional.
    Any,
    /// No live record (first-write).
    Absent,
    /// The record at this etag (compare-and-set).
    Etag(String),
}

/// One conditional write of a coordination record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub key: String,
    pub value: Vec<u8>,
    pub expect: Expect,
    /// Expiry, where the store has TTLs (the swarm also keeps expiry inside its values).
    pub ttl: Option<Duration>,
    /// Clears an expiry the record had (`ttlInSeconds: -1`); some stores keep the old one
    /// on an overwrite without a TTL.
    pub never_expires: bool,
}

impl Put {
    pub fn new(key: impl Into<String>, value: Vec<u8>, expect: Expect) -> Put {
        Put {
            key: key.into(),
            value,
            expect,
            ttl: None,
            never_expires: false,
        }
    }

    /// The record is kept until it is overwritten or deleted, whatever TTL it had.
    pub fn never_expires(mut self) -> Put {
        self.ttl = None;
        self.never_expires = true;
        self
    }

    pub fn ttl(mut self, ttl: Option<Duration>) -> Put {
        self.ttl = ttl;
        self
    }
}

/// Whether `found` (the record under a put's key now) satisfies `expect`.
pub fn expectation_holds(expect: &Expect, found: Option<&Versioned>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Etag(etag) => found.is_some_and(|v| &v.etag == etag),
    }
}

/// TTL seconds as stores take them: whole seconds, at least one.
pub(crate) fn ttl_seconds(ttl: Duration) -> u64 {
    ttl.as_secs_f64().ceil().max(1.0) as u64
}

/// What a store needs for many processes to share one blackboard ([`crate::swarm`]): reads
/// and conditional writes of coordination records (claims, the feed), and a run's commit —
/// outputs, consumption records and those writes — that fails as a whole where the store has
/// transactions.
pub trait SwarmStore: BlackboardStore {
    /// The records under `keys`, in order (`None` for missing or expired ones).
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>>;

    /// Writes `puts` if every expectation holds; `Ok(false)` when one did not. All or nothing
    /// where [`SwarmStore::atomic`]; otherwise in order, stopping at the first that fails.
    fn write<'a>(&'a self, puts: &'a [Put]) -> StoreFuture<'a, bool> {
        self.commit(&[], &[], puts)
    }

    /// Writes `artifacts`, `consumptions` and `puts` as one transaction where the store has
    /// them (`Ok(false)`, nothing written, when an expectation failed). Without transactions:
    /// artifacts, then records, then the puts in order, stopping at the first that fails.
    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool>;

    /// Whether [`SwarmStore::commit`] is all or nothing.
    fn atomic(&self) -> bool;

    /// The artifacts of `ids`, in order (`None` for missing ones).
    fn get_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Option<Artifact>>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                found.push(self.get(id).await?);
            }
            Ok(found)
        })
    }
}

/// Sorts by `(created_at, id)` and cuts the page: the reference every store's `query` equals.
pub fn page_of(mut selected: Vec<Artifact>, limit: usize, offset: usize) -> Page {
    selected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let total = selected.len();
    let artifacts = selected
        .into_iter()
        .skip(offset)
        .take(if limit == 0 { usize::MAX } else { limit })
        .collect();
    Page { artifacts, total }
}

/// The artifacts of `ids` through `store`'s key reads (for stores whose coordination records
/// and artifacts share one keyspace), expired ones left out.
pub(crate) async fn get_many_by_key<S: SwarmStore + ?Sized>(
    store: &S,
    ids: &[String],
) -> Result<Vec<Option<Artifact>>> {
    let keys: Vec<String> = ids.iter().map(|id| artifact_key(id)).collect();
    store
        .read(&keys)
        .await?
        .into_iter()
        .map(|found| {
            found
                .map(|v| Artifact::from_json(&v.value))
                .transpose()
                .map(|a| a.and_then(live))
        })
        .collect()
}

/// `artifact` unless it has expired (for stores whose TTL may lag, or that have none).
pub(crate) fn live(artifact: Artifact) -> Option<Artifact> {
    (!artifact.expired(Timestamp::now())).then_some(artifact)
}

/// A shared store is a store: several flocks (swarm members in one process, tests) can hold
/// one.
impl<T: BlackboardStore + ?Sized> BlackboardStore for std::sync::Arc<T> {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        (**self).publish(artifact)
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        (**self).publish_outputs(outputs, consumptions)
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        (**self).get(id)
    }

    fn list_by_type<'a>(&'a self, type_name: &'a str) -> StoreFuture<'a, Vec<Artifact>> {
        (**self).list_by_type(type_name)
    }

    fn query<'a>(
        &'a self,
        filter: &'a Filter,
        limit: usize,
        offset: usize,
    ) -> StoreFuture<'a, Page> {
        (**self).query(filter, limit, offset)
    }

    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()> {
        (**self).record_consumptions(records)
    }

    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>> {
        (**self).consumptions(artifact_id)
    }

    fn summary<'a>(&'a self, filter: &'a Filter) -> StoreFuture<'a, Summary> {
        (**self).summary(filter)
    }
}

impl<T: SwarmStore + ?Sized> SwarmStore for std::sync::Arc<T> {
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>> {
        (**self).read(keys)
    }

    fn write<'a>(&'a self, puts: &'a [Put]) -> StoreFuture<'a, bool> {
        (**self).write(puts)
    }

    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool> {
        (**self).commit(artifacts, consumptions, puts)
    }

    fn atomic(&self) -> bool {
        (**self).atomic()
    }

    fn get_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Option<Artifact>>> {
        (**self).get_many(ids)
    }
}
