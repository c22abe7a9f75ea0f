//! `EmbeddedStore`: the blackboard in a Roost keyspace, in process.
//!
//! Layout (one keyspace, values are JSON):
//!
//! | key | value |
//! | --- | --- |
//! | `artifact:{id}` | the artifact, in Flock's JSON |
//! | `consumption:{artifact id}:{consumer}:{run id}` | a consumption record |
//!
//! There are no index documents to keep in step: the engine's secondary indexes on `type`,
//! `produced_by`, `correlation_id` and `created_at` are maintained in the same transaction as
//! the artifact, so an artifact is never written apart from its index entries, and filters
//! are served by those indexes (tags are checked on the rows the indexes select, as the query
//! language cannot test array membership). An agent run's outputs and the consumption records
//! of its inputs are one transaction. Consumptions of an artifact are one key-range scan.

use std::path::Path;

use roost_engine::{
    AsyncDatabase, Database, Durability, Filter as EngineFilter, Operation, Options, Query,
    SetRequest, SortKey,
};
use serde_json::{Value, json};

use super::{
    BlackboardStore, Expect, Filter, Page, Put, StoreFuture, SwarmStore, Versioned, artifact_key,
    consumption_key, consumption_prefix, live, page_of, ttl_seconds,
};
use crate::artifact::{Artifact, Consumption};
use crate::error::{Error, Result};

/// The JSON paths the keyspace indexes.
pub const INDEXED_PATHS: [&str; 4] = ["type", "produced_by", "correlation_id", "created_at"];

/// The blackboard on an embedded Roost keyspace.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: AsyncDatabase,
}

impl EmbeddedStore {
    /// Opens (or creates) the blackboard file at `path`, durable on every write.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore> {
        Self::open_with(Options::new(path.as_ref()).durability(Durability::Immediate))
    }

    /// Opens with the caller's options; the blackboard's indexes are added to them.
    pub fn open_with(options: Options) -> Result<EmbeddedStore> {
        let db = Database::open(options.indexes(INDEXED_PATHS))?;
        Ok(EmbeddedStore {
            db: db.into_async(),
        })
    }

    /// Flushes and closes the keyspace.
    pub async fn close(&self) -> Result<()> {
        Ok(self.db.close().await?)
    }

    fn set_artifact(artifact: &Artifact) -> SetRequest {
        with_ttl(
            SetRequest::new(artifact_key(&artifact.id), artifact.to_json())
                .content_type("application/json"),
            artifact.ttl(),
        )
    }

    fn set_consumption(record: &Consumption) -> SetRequest {
        let request = SetRequest::new(
            consumption_key(record),
            serde_json::to_vec(record).expect("a consumption record always serialises"),
        )
        .content_type("application/json");
        with_ttl(request, record.ttl())
    }
}

fn with_ttl(request: SetRequest, ttl: Option<std::time::Duration>) -> SetRequest {
    match ttl {
        Some(ttl) => request.ttl_in_seconds(ttl_seconds(ttl).to_string()),
        None => request,
    }
}

fn cmp(op: &str, path: &str, value: Value) -> Result<EngineFilter> {
    let operand = json!({ path: value }).to_string();
    Ok(EngineFilter::from_operator(op, operand.as_bytes())?)
}

fn one_of(path: &str, values: &std::collections::BTreeSet<String>) -> Result<EngineFilter> {
    if values.len() == 1 {
        let only = values.iter().next().expect("one value");
        return cmp("EQ", path, json!(only));
    }
    let operand = json!({ path: values }).to_string();
    Ok(EngineFilter::from_operator("IN", operand.as_bytes())?)
}

/// The engine filter for everything but tags. `created_at >= start` (or `>= ""`) is always
/// there: only artifacts have `created_at`, so consumption records never match.
fn engine_filter(filter: &Filter) -> Result<EngineFilter> {
    let mut parts = Vec::new();
    if let Some(types) = &filter.type_names {
        parts.push(one_of("type", types)?);
    }
    if let Some(producers) = &filter.produced_by {
        parts.push(one_of("produced_by", producers)?);
    }
    if let Some(id) = &filter.correlation_id {
        parts.push(cmp("EQ", "correlation_id", json!(id))?);
    }
    if let Some(kinds) = &filter.visibility_kinds {
        parts.push(one_of("visibility.kind", kinds)?);
    }
    let start = filter.start.map(|t| t.to_string()).unwrap_or_default();
    parts.push(cmp("GTE", "created_at", json!(start))?);
    if let Some(end) = filter.end {
        parts.push(cmp("LTE", "created_at", json!(end.to_string()))?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        EngineFilter::And(parts)
    })
}

impl BlackboardStore for EmbeddedStore {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.db.set(Self::set_artifact(artifact)).await?;
            Ok(())
        })
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let operations: Vec<Operation> = outputs
                .iter()
                .map(|a| Operation::Set(Self::set_artifact(a)))
                .chain(
                    consumptions
                        .iter()
                        .map(|c| Operation::Set(Self::set_consumption(c))),
                )
                .collect();
            if !operations.is_empty() {
                self.db.transact(operations).await?;
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        Box::pin(async move {
            match self.db.get(artifact_key(id)).await? {
                Some(record) => Ok(live(Artifact::from_json(&record.value)?)),
                None => Ok(None),
            }
        })
    }

    fn query<'a>(
        &'a self,
        filter: &'a Filter,
        limit: usize,
        offset: usize,
    ) -> StoreFuture<'a, Page> {
        Box::pin(async move {
            let query = Query {
                filter: engine_filter(filter)?,
                sort: vec![
                    SortKey::new("created_at", false)?,
                    SortKey::new("id", false)?,
                ],
                ..Query::default()
            };
            let mut selected = Vec::new();
            let mut next = Some(query);
            while let Some(query) = next.take() {
                let page = self.db.query(query.clone()).await?;
                for row in &page.rows {
                    let artifact = Artifact::from_json(&row.value)?;
                    if filter.matches(&artifact) {
                        selected.push(artifact);
                    }
                }
                next = page.token.map(|token| Query {
                    token: Some(token),
                    ..query
                });
            }
            Ok(page_of(selected, limit, offset))
        })
    }

    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()> {
        self.publish_outputs(&[], records)
    }

    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>> {
        Box::pin(async move {
            let db = self.db.clone();
            let prefix = consumption_prefix(artifact_id);
            let page = tokio::task::spawn_blocking(move || db.blocking().scan(prefix, None, 0))
                .await
                .map_err(|e| Error::Store(e.to_string()))??;
            page.records
                .iter()
                .map(|(_, record)| {
                    serde_json::from_slice(&record.value)
                        .map_err(|e| Error::Corrupt(format!("consumption record: {e}")))
                })
                .collect()
        })
    }
}

impl SwarmStore for EmbeddedStore {
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>> {
        Box::pin(async move {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
            Ok(self
                .db
                .bulk_get(keys)
                .await?
                .into_iter()
                .map(|record| {
                    record.map(|r| Versioned {
                        value: r.value,
                        etag: r.etag.to_string(),
                    })
                })
                .collect())
        })
    }

    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut operations: Vec<Operation> = artifacts
                .iter()
                .map(|a| Operation::Set(Self::set_artifact(a)))
                .chain(
                    consumptions
                        .iter()
                        .map(|c| Operation::Set(Self::set_consumption(c))),
                )
                .collect();
            for put in puts {
                let mut request = SetRequest::new(put.key.as_bytes(), put.value.clone());
                request = match &put.expect {
                    Expect::Any => request,
                    Expect::Absent => request.first_write(),
                    Expect::Etag(etag) => request.etag(etag.clone()),
                };
                if let Some(ttl) = put.ttl {
                    request = request.ttl_in_seconds(ttl_seconds(ttl).to_string());
                } else if put.never_expires {
                    request = request.ttl_in_seconds("-1");
                }
                operations.push(Operation::Set(request));
            }
            if operations.is_empty() {
                return Ok(true);
            }
            match self.db.transact(operations).await {
                Ok(_) => Ok(true),
                Err(roost_engine::Error::EtagMismatch { .. }) => Ok(false),
                Err(err) => Err(err.into()),
            }
        })
    }

    fn atomic(&self) -> bool {
        true
    }

    fn get_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Option<Artifact>>> {
        Box::pin(super::get_many_by_key(self, ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn consumption_keys_group_under_their_artifact() {
        let record = Consumption {
            artifact_id: "a1".into(),
            consumer: "scout".into(),
            run_id: Some("r9".into()),
            correlation_id: None,
            consumed_at: Timestamp::now(),
            expires_at: None,
        };
        assert!(consumption_key(&record).starts_with(&consumption_prefix("a1")));
        assert!(!consumption_key(&record).starts_with(&consumption_prefix("a")));
    }
}
