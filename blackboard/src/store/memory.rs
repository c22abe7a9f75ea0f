//! `MemoryStore`: everything in process memory, behind one lock; for tests and short runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use std::time::Instant;

use super::{
    BlackboardStore, Expect, Filter, Page, Put, StoreFuture, SwarmStore, Versioned,
    expectation_holds, page_of,
};
use crate::artifact::{Artifact, Consumption};
use crate::error::Error;

#[derive(Default)]
struct Inner {
    artifacts: HashMap<String, Artifact>,
    /// type → ids, so a type filter does not read every artifact.
    by_type: BTreeMap<String, Vec<String>>,
    consumptions: HashMap<String, Vec<Consumption>>,
    /// Coordination records: key → (value, etag, expiry).
    records: HashMap<String, (Vec<u8>, u64, Option<Instant>)>,
    next_etag: u64,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Error> {
        self.inner
            .lock()
            .map_err(|_| Error::Store("the memory store's lock is poisoned".into()))
    }
}

impl Inner {
    fn record(&self, key: &str) -> Option<Versioned> {
        let (value, etag, expiry) = self.records.get(key)?;
        if expiry.is_some_and(|at| at <= Instant::now()) {
            return None;
        }
        Some(Versioned {
            value: value.clone(),
            etag: etag.to_string(),
        })
    }

    fn put(&mut self, put: &Put) {
        self.next_etag += 1;
        let expiry = put.ttl.map(|ttl| Instant::now() + ttl);
        self.records
            .insert(put.key.clone(), (put.value.clone(), self.next_etag, expiry));
    }

    fn record_consumption(&mut self, record: &Consumption) {
        self.consumptions
            .entry(record.artifact_id.clone())
            .or_default()
            .push(record.clone());
    }

    fn upsert(&mut self, artifact: &Artifact) {
        if let Some(old) = self.artifacts.get(&artifact.id)
            && old.type_name != artifact.type_name
            && let Some(ids) = self.by_type.get_mut(&old.type_name)
        {
            ids.retain(|id| id != &artifact.id);
        }
        let ids = self.by_type.entry(artifact.type_name.clone()).or_default();
        if !self.artifacts.contains_key(&artifact.id) || !ids.contains(&artifact.id) {
            ids.push(artifact.id.clone());
        }
        self.artifacts.insert(artifact.id.clone(), artifact.clone());
    }
}

impl BlackboardStore for MemoryStore {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.lock()?.upsert(artifact);
            Ok(())
        })
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut inner = self.lock()?;
            for artifact in outputs {
                inner.upsert(artifact);
            }
            for record in consumptions {
                inner.record_consumption(record);
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        Box::pin(async move {
            let now = crate::time::Timestamp::now();
            Ok(self
                .lock()?
                .artifacts
                .get(id)
                .filter(|a| !a.expired(now))
                .cloned())
        })
    }

    fn query<'a>(
        &'a self,
        filter: &'a Filter,
        limit: usize,
        offset: usize,
    ) -> StoreFuture<'a, Page> {
        Box::pin(async move {
            let inner = self.lock()?;
            let selected: Vec<Artifact> = match &filter.type_names {
                Some(types) => types
                    .iter()
                    .filter_map(|t| inner.by_type.get(t))
                    .flatten()
                    .filter_map(|id| inner.artifacts.get(id))
                    .filter(|a| filter.matches(a))
                    .cloned()
                    .collect(),
                None => inner
                    .artifacts
                    .values()
                    .filter(|a| filter.matches(a))
                    .cloned()
                    .collect(),
            };
            Ok(page_of(selected, limit, offset))
        })
    }

    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()> {
        self.publish_outputs(&[], records)
    }

    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>> {
        Box::pin(async move {
            let now = crate::time::Timestamp::now();
            Ok(self
                .lock()?
                .consumptions
                .get(artifact_id)
                .map(|records| {
                    records
                        .iter()
                        .filter(|r| r.expires_at.is_none_or(|at| at > now))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default())
        })
    }
}

impl SwarmStore for MemoryStore {
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>> {
        Box::pin(async move {
            let inner = self.lock()?;
            Ok(keys.iter().map(|key| inner.record(key)).collect())
        })
    }

    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut inner = self.lock()?;
            // One lock: every expectation is checked before anything is written.
            for put in puts {
                if put.expect != Expect::Any
                    && !expectation_holds(&put.expect, inner.record(&put.key).as_ref())
                {
                    return Ok(false);
                }
            }
            for artifact in artifacts {
                inner.upsert(artifact);
            }
            for record in consumptions {
                inner.record_consumption(record);
            }
            for put in puts {
                inner.put(put);
            }
            Ok(true)
        })
    }

    fn atomic(&self) -> bool {
        true
    }
}
