//! `MemoryStore`: everything in process memory, behind one lock; for tests and short runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{BlackboardStore, Filter, Page, StoreFuture, page_of};
use crate::artifact::{Artifact, Consumption};
use crate::error::Error;

#[derive(Default)]
struct Inner {
    artifacts: HashMap<String, Artifact>,
    /// type → ids, so a type filter does not read every artifact.
    by_type: BTreeMap<String, Vec<String>>,
    consumptions: HashMap<String, Vec<Consumption>>,
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
                inner
                    .consumptions
                    .entry(record.artifact_id.clone())
                    .or_default()
                    .push(record.clone());
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        Box::pin(async move { Ok(self.lock()?.artifacts.get(id).cloned()) })
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
            Ok(self
                .lock()?
                .consumptions
                .get(artifact_id)
                .cloned()
                .unwrap_or_default())
        })
    }
}
