//! `DaprStore`: the blackboard on any Dapr state store, through the Dapr state API (gRPC, the
//! official `dapr` crate's client). The same app runs on Roost, Redis or PostgreSQL by changing
//! the component YAML, under daprd or under `roost sidecar`.
//!
//! Layout (values are JSON, saved with `contentType: application/json`):
//!
//! | key | value |
//! | --- | --- |
//! | `artifact:{id}` | the artifact, in Flock's JSON |
//! | `consumption:{artifact id}:{consumer}:{run id}` | a consumption record |
//!
//! What the store can do is read from the sidecar's metadata API at connect time
//! ([`DaprCapabilities`], like Flock's capability flags):
//! - `TRANSACTIONAL`: an agent run's outputs and consumption records are one transaction;
//!   without it they are written outputs first, then the records (a crash in between re-runs
//!   the agent on restart; it never loses outputs).
//! - `ETAG`: `publish` is a compare-and-set on the etag it read (first-write when the artifact
//!   is new) and retries conflicts with exponential backoff, so concurrent publishers of one
//!   artifact never interleave a stale write.
//! - `QUERY_API`: queries and consumption lookups use the Dapr query API, filtering on `type`,
//!   `produced_by`, `correlation_id` (or `artifact_id`) in the store, and every result is then
//!   checked against the full filter and the key layout (the query API sees every key of the
//!   store). Without it, `query` and `consumptions` fail with a clear error: there are no
//!   growing index documents to fall back on, by design.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as runtime;
use runtime::dapr_client::DaprClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{
    BlackboardStore, Filter, Page, StoreFuture, artifact_key, consumption_key, consumption_prefix,
    page_of,
};
use crate::artifact::{Artifact, Consumption};
use crate::error::{Error, Result};

/// Conflicting publishes are retried this many times in all.
const MAX_ATTEMPTS: u32 = 8;
/// Rows asked per query page.
const QUERY_PAGE: u64 = 1000;

/// What the Dapr state store supports, from the sidecar's metadata API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaprCapabilities {
    pub store_name: String,
    pub endpoint: String,
    pub transactions: bool,
    pub etag: bool,
    pub query: bool,
    pub ttl: bool,
}

/// The blackboard on a Dapr state store.
#[derive(Clone)]
pub struct DaprStore {
    client: DaprClient<Channel>,
    capabilities: DaprCapabilities,
}

fn grpc_error(status: tonic::Status) -> Error {
    Error::Store(format!("{:?}: {}", status.code(), status.message()))
}

fn json_metadata() -> HashMap<String, String> {
    HashMap::from([("contentType".to_string(), "application/json".to_string())])
}

fn item(key: String, value: Vec<u8>, etag: Option<String>) -> common::StateItem {
    let options = match &etag {
        // No etag and first-write: the write fails if the key already exists.
        Some(e) if e.is_empty() => Some(common::StateOptions {
            concurrency: common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
            consistency: 0,
        }),
        _ => None,
    };
    common::StateItem {
        key,
        value,
        etag: etag
            .filter(|e| !e.is_empty())
            .map(|value| common::Etag { value }),
        metadata: json_metadata(),
        options,
    }
}

fn upsert(state: common::StateItem) -> runtime::TransactionalStateOperation {
    runtime::TransactionalStateOperation {
        operation_type: "upsert".into(),
        request: Some(state),
    }
}

/// EQ for one value, IN for several.
fn one_of(path: &str, values: &BTreeSet<String>) -> Value {
    if values.len() == 1 {
        json!({"EQ": { path: values.iter().next().expect("one value") }})
    } else {
        json!({"IN": { path: values }})
    }
}

impl DaprStore {
    /// Connects to the sidecar's gRPC endpoint (`http://127.0.0.1:50001`) and reads the
    /// store's capabilities from its metadata API; fails if the store is not registered.
    pub async fn connect(endpoint: &str, store_name: &str) -> Result<DaprStore> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Error::Store(format!("endpoint {endpoint:?}: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| {
                Error::Store(format!("cannot reach the Dapr sidecar at {endpoint}: {e}"))
            })?;
        let mut client = DaprClient::new(channel);
        let metadata = client
            .get_metadata(runtime::GetMetadataRequest::default())
            .await
            .map_err(grpc_error)?
            .into_inner();
        let component = metadata
            .registered_components
            .iter()
            .find(|c| c.name == store_name && c.r#type.starts_with("state."))
            .ok_or_else(|| {
                Error::Store(format!(
                    "the Dapr sidecar at {endpoint} has no state store named {store_name:?}"
                ))
            })?;
        let has = |cap: &str| component.capabilities.iter().any(|c| c == cap);
        let capabilities = DaprCapabilities {
            store_name: store_name.to_string(),
            endpoint: endpoint.to_string(),
            transactions: has("TRANSACTIONAL"),
            etag: has("ETAG"),
            query: has("QUERY_API"),
            ttl: has("TTL"),
        };
        Ok(DaprStore {
            client,
            capabilities,
        })
    }

    /// Connects to `DAPR_GRPC_ENDPOINT`, else `http://127.0.0.1:$DAPR_GRPC_PORT` (50001), as the
    /// Dapr SDKs do.
    pub async fn from_env(store_name: &str) -> Result<DaprStore> {
        let endpoint = std::env::var("DAPR_GRPC_ENDPOINT").unwrap_or_else(|_| {
            let port = std::env::var("DAPR_GRPC_PORT").unwrap_or_else(|_| "50001".into());
            format!("http://127.0.0.1:{port}")
        });
        Self::connect(&endpoint, store_name).await
    }

    pub fn capabilities(&self) -> &DaprCapabilities {
        &self.capabilities
    }

    fn store(&self) -> String {
        self.capabilities.store_name.clone()
    }

    async fn save(&self, states: Vec<common::StateItem>) -> std::result::Result<(), tonic::Status> {
        if states.is_empty() {
            return Ok(());
        }
        self.client
            .clone()
            .save_state(runtime::SaveStateRequest {
                store_name: self.store(),
                states,
            })
            .await
            .map(|_| ())
    }

    async fn get_raw(&self, key: String) -> Result<Option<(Vec<u8>, String)>> {
        let response = self
            .client
            .clone()
            .get_state(runtime::GetStateRequest {
                store_name: self.store(),
                key,
                ..Default::default()
            })
            .await
            .map_err(grpc_error)?
            .into_inner();
        if response.data.is_empty() {
            return Ok(None);
        }
        Ok(Some((response.data, response.etag)))
    }

    /// Every row the query selects (all pages), with keys as the app sees them.
    async fn query_all(&self, filter: Option<Value>) -> Result<Vec<(String, Vec<u8>)>> {
        if !self.capabilities.query {
            return Err(Error::Store(format!(
                "state store {:?} has no QUERY_API: the blackboard cannot list or query \
                 artifacts on it (use a store with the query API: Roost, PostgreSQL, Redis with \
                 RediSearch, ...)",
                self.capabilities.store_name
            )));
        }
        let mut rows = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = json!({"page": {"limit": QUERY_PAGE}});
            if let Some(f) = &filter {
                query["filter"] = f.clone();
            }
            if !token.is_empty() {
                query["page"]["token"] = json!(token);
            }
            let response = self
                .client
                .clone()
                .query_state_alpha1(runtime::QueryStateRequest {
                    store_name: self.store(),
                    query: query.to_string(),
                    metadata: HashMap::new(),
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            let got = response.results.len();
            rows.extend(response.results.into_iter().map(|r| (r.key, r.data)));
            if response.token.is_empty() || got == 0 {
                return Ok(rows);
            }
            token = response.token;
        }
    }
}

impl BlackboardStore for DaprStore {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = artifact_key(&artifact.id);
            let value = artifact.to_json();
            if !self.capabilities.etag {
                return self
                    .save(vec![item(key, value, None)])
                    .await
                    .map_err(grpc_error);
            }
            let mut backoff = Duration::from_millis(2);
            for attempt in 1..=MAX_ATTEMPTS {
                // Compare-and-set on what we read; "" = the key must not exist yet.
                let etag = self
                    .get_raw(key.clone())
                    .await?
                    .map(|(_, etag)| etag)
                    .unwrap_or_default();
                match self
                    .save(vec![item(key.clone(), value.clone(), Some(etag))])
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(status) if status.code() == tonic::Code::Aborted => {
                        tracing::debug!(%key, attempt, "etag conflict on publish: retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    Err(status) => return Err(grpc_error(status)),
                }
            }
            Err(Error::Conflict {
                key,
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let artifacts: Vec<common::StateItem> = outputs
                .iter()
                .map(|a| item(artifact_key(&a.id), a.to_json(), None))
                .collect();
            let records: Vec<common::StateItem> = consumptions
                .iter()
                .map(|c| {
                    let value = serde_json::to_vec(c).expect("a consumption record serialises");
                    item(consumption_key(c), value, None)
                })
                .collect();
            if self.capabilities.transactions {
                let operations: Vec<_> = artifacts.into_iter().chain(records).map(upsert).collect();
                if operations.is_empty() {
                    return Ok(());
                }
                self.client
                    .clone()
                    .execute_state_transaction(runtime::ExecuteStateTransactionRequest {
                        store_name: self.store(),
                        operations,
                        metadata: HashMap::new(),
                    })
                    .await
                    .map_err(grpc_error)?;
                return Ok(());
            }
            // Outputs first: a crash before the records re-runs the agent, never loses outputs.
            self.save(artifacts).await.map_err(grpc_error)?;
            self.save(records).await.map_err(grpc_error)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        Box::pin(async move {
            match self.get_raw(artifact_key(id)).await? {
                Some((data, _)) => Ok(Some(Artifact::from_json(&data)?)),
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
            let mut parts = Vec::new();
            if let Some(types) = &filter.type_names {
                parts.push(one_of("type", types));
            }
            if let Some(producers) = &filter.produced_by {
                parts.push(one_of("produced_by", producers));
            }
            if let Some(id) = &filter.correlation_id {
                parts.push(json!({"EQ": {"correlation_id": id}}));
            }
            let pushed = match parts.len() {
                0 => None,
                1 => parts.pop(),
                _ => Some(json!({ "AND": parts })),
            };
            let mut selected = Vec::new();
            for (key, data) in self.query_all(pushed).await? {
                if !key.starts_with("artifact:") {
                    continue;
                }
                let artifact = Artifact::from_json(&data)?;
                if filter.matches(&artifact) {
                    selected.push(artifact);
                }
            }
            Ok(page_of(selected, limit, offset))
        })
    }

    fn record_consumptions<'a>(&'a self, records: &'a [Consumption]) -> StoreFuture<'a, ()> {
        self.publish_outputs(&[], records)
    }

    fn consumptions<'a>(&'a self, artifact_id: &'a str) -> StoreFuture<'a, Vec<Consumption>> {
        Box::pin(async move {
            let prefix = consumption_prefix(artifact_id);
            let rows = self
                .query_all(Some(json!({"EQ": {"artifact_id": artifact_id}})))
                .await?;
            let mut records = Vec::new();
            for (key, data) in rows {
                if key.starts_with(&prefix) {
                    records.push(
                        serde_json::from_slice(&data)
                            .map_err(|e| Error::Corrupt(format!("consumption record: {e}")))?,
                    );
                }
            }
            Ok(records)
        })
    }
}
