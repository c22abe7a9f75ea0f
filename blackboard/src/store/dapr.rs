//! `DaprStore`: the blackboard on any Dapr state store, through the Dapr state API (gRPC, the
//! official `dapr` crate's client). The same app runs on Roost, Redis or PostgreSQL by changing
//! the component YAML, under daprd or under `roost-sidecar`.
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
//!   store). Without it (Dapr's in-memory store, PostgreSQL v2, Redis without RediSearch) the
//!   store keeps index records of its own, below.
//!
//! Index records, on stores without `QUERY_API` (JSON arrays of strings, kept sorted):
//!
//! | key | members |
//! | --- | --- |
//! | `index:types` | every artifact type name published |
//! | `index:type:{type}` | the ids of the artifacts of that type |
//! | `index:correlation:{id}` | the ids of the artifacts with that correlation id |
//! | `index:consumptions:{artifact id}` | the keys of that artifact's consumption records |
//!
//! A query reads the index records of the filter's types (or of every type), gets the
//! artifacts in bulk and applies the filter. Index records only grow by compare-and-set on
//! their etag: with `TRANSACTIONAL` they are written in the same transaction as the artifacts
//! and records they index (a conflict fails the whole transaction, which is retried with
//! fresh reads); without it the artifacts come first and each index record is then updated by
//! its own compare-and-set loop, so concurrent publishers never drop each other's entries (a
//! crash between the two leaves an artifact stored but not yet listed).
//!
//! The capabilities can be overridden ([`DaprStore::with_capabilities`]), as Flock's
//! `DaprStateBlackboardConfig` flags allow: in particular `sidecar_encryption` for a store
//! encrypted by daprd (`primaryEncryptionKey`), whose transactions daprd does not encrypt
//! consistently; the store then writes without transactions.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as runtime;
use runtime::dapr_client::DaprClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{
    BlackboardStore, Expect, Filter, Page, Put, StoreFuture, SwarmStore, Versioned, artifact_key,
    consumption_key, consumption_prefix, expectation_holds, live, page_of, ttl_seconds,
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
    /// The component's type as the sidecar reports it (`state.roost`, `state.redis`, ...).
    pub component_type: String,
    pub transactions: bool,
    pub etag: bool,
    pub query: bool,
    pub ttl: bool,
    /// daprd encrypts the store's values (`primaryEncryptionKey`): transactions are not used.
    pub sidecar_encryption: bool,
}

impl DaprCapabilities {
    /// Whether outputs, records and index records are written in one transaction.
    pub fn uses_transactions(&self) -> bool {
        self.transactions && !self.sidecar_encryption
    }
}

const TYPES_INDEX: &str = "index:types";

fn type_index(type_name: &str) -> String {
    format!("index:type:{type_name}")
}

fn correlation_index(correlation_id: &str) -> String {
    format!("index:correlation:{correlation_id}")
}

fn consumption_index(artifact_id: &str) -> String {
    format!("index:consumptions:{artifact_id}")
}

/// The index entries that `artifacts` and `records` add: index key → members.
fn index_entries(
    artifacts: &[Artifact],
    records: &[Consumption],
) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut entries: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for a in artifacts {
        entries
            .entry(TYPES_INDEX.to_string())
            .or_default()
            .insert(a.type_name.clone());
        entries
            .entry(type_index(&a.type_name))
            .or_default()
            .insert(a.id.clone());
        if let Some(correlation) = &a.correlation_id {
            entries
                .entry(correlation_index(correlation))
                .or_default()
                .insert(a.id.clone());
        }
    }
    for c in records {
        entries
            .entry(consumption_index(&c.artifact_id))
            .or_default()
            .insert(consumption_key(c));
    }
    entries
}

fn parse_members(data: &[u8]) -> Result<BTreeSet<String>> {
    serde_json::from_slice(data).map_err(|e| Error::Corrupt(format!("index record: {e}")))
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

/// Whether a failed write may be an etag or first-write conflict: `ABORTED`, or `INTERNAL`,
/// which is how daprd reports one inside a transaction and how Dapr's Redis store reports
/// every one (a script error). The callers re-read before they try again.
fn may_be_conflict(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Aborted | tonic::Code::Internal)
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

/// A coordination record's write: its expectation as etag / first-write, its TTL as
/// `ttlInSeconds`.
fn put_item(put: &Put) -> common::StateItem {
    let etag = match &put.expect {
        Expect::Any => None,
        Expect::Absent => Some(String::new()),
        Expect::Etag(etag) => Some(etag.clone()),
    };
    let mut state = item(put.key.clone(), put.value.clone(), etag);
    if let Some(ttl) = put.ttl {
        state
            .metadata
            .insert("ttlInSeconds".into(), ttl_seconds(ttl).to_string());
    } else if put.never_expires {
        state.metadata.insert("ttlInSeconds".into(), "-1".into());
    }
    state
}

/// Sets `ttlInSeconds` when the record expires.
fn with_ttl(mut state: common::StateItem, ttl: Option<Duration>) -> common::StateItem {
    if let Some(ttl) = ttl {
        state
            .metadata
            .insert("ttlInSeconds".into(), ttl_seconds(ttl).to_string());
    }
    state
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
        // Dapr's Redis store reports TRANSACTIONAL, but its transaction is a MULTI without
        // rollback (an etag that fails does not undo the other writes), and with a JSON
        // content type per item it calls RedisJSON commands a plain Redis does not have: the
        // blackboard writes to it as to a store without transactions.
        let transactions = has("TRANSACTIONAL") && component.r#type != "state.redis";
        let capabilities = DaprCapabilities {
            store_name: store_name.to_string(),
            endpoint: endpoint.to_string(),
            component_type: component.r#type.clone(),
            transactions,
            etag: has("ETAG"),
            query: has("QUERY_API"),
            ttl: has("TTL"),
            sidecar_encryption: false,
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

    /// Overrides what was read from the sidecar (for instance `query = false` to use index
    /// records, or `sidecar_encryption = true`).
    pub fn with_capabilities(mut self, change: impl FnOnce(&mut DaprCapabilities)) -> DaprStore {
        change(&mut self.capabilities);
        self
    }

    /// Values of `keys` (missing ones left out), as the app sees the keys.
    async fn bulk_get(&self, keys: Vec<String>) -> Result<Vec<(String, Vec<u8>)>> {
        let found = self.read_versioned(&keys).await?;
        Ok(keys
            .into_iter()
            .zip(found)
            .filter_map(|(key, v)| v.map(|v| (key, v.value)))
            .collect())
    }

    /// The members of index record `key` (empty when it does not exist).
    async fn index_members(&self, key: &str) -> Result<BTreeSet<String>> {
        match self.get_raw(key.to_string()).await? {
            Some((data, _)) => parse_members(&data),
            None => Ok(BTreeSet::new()),
        }
    }

    /// The index records `entries` needs changed, each with the etag it was read at ("" for
    /// a new record): (key, new value, etag).
    async fn index_updates(
        &self,
        entries: &std::collections::BTreeMap<String, BTreeSet<String>>,
    ) -> Result<Vec<(String, Vec<u8>, String)>> {
        let mut updates = Vec::new();
        for (key, members) in entries {
            let (mut current, etag) = match self.get_raw(key.clone()).await? {
                Some((data, etag)) => (parse_members(&data)?, etag),
                None => (BTreeSet::new(), String::new()),
            };
            if members.is_subset(&current) {
                continue;
            }
            current.extend(members.iter().cloned());
            let value = serde_json::to_vec(&current).expect("strings serialise");
            updates.push((key.clone(), value, etag));
        }
        Ok(updates)
    }

    /// Adds `entries` to their index records outside a transaction, each record by its own
    /// compare-and-set loop.
    async fn index_add(
        &self,
        entries: &std::collections::BTreeMap<String, BTreeSet<String>>,
    ) -> Result<()> {
        for (key, members) in entries {
            let one = std::collections::BTreeMap::from([(key.clone(), members.clone())]);
            let mut backoff = Duration::from_millis(2);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let Some((key, value, etag)) = self.index_updates(&one).await?.pop() else {
                    break;
                };
                let etag = self.capabilities.etag.then_some(etag);
                match self.save(vec![item(key.clone(), value, etag)]).await {
                    Ok(()) => break,
                    Err(status) if may_be_conflict(&status) && attempt < MAX_ATTEMPTS => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    Err(status) if may_be_conflict(&status) => {
                        return Err(Error::Conflict {
                            key,
                            attempts: MAX_ATTEMPTS,
                        });
                    }
                    Err(status) => return Err(grpc_error(status)),
                }
            }
        }
        Ok(())
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

impl DaprStore {
    /// The records under `keys`, in order, with their etags.
    async fn read_versioned(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        let mut found: HashMap<String, Versioned> = HashMap::new();
        for chunk in keys.chunks(100) {
            let response = self
                .client
                .clone()
                .get_bulk_state(runtime::GetBulkStateRequest {
                    store_name: self.store(),
                    keys: chunk.to_vec(),
                    parallelism: 0,
                    metadata: HashMap::new(),
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            for item in response.items {
                if !item.error.is_empty() {
                    return Err(Error::Store(format!(
                        "bulk get {}: {}",
                        item.key, item.error
                    )));
                }
                if !item.data.is_empty() {
                    found.insert(
                        item.key,
                        Versioned {
                            value: item.data,
                            etag: item.etag,
                        },
                    );
                }
            }
        }
        Ok(keys.iter().map(|key| found.remove(key)).collect())
    }

    /// Whether every expectation of `puts` holds now (read after a failed transaction, to
    /// tell a failed expectation from a conflict on an index record).
    async fn expectations_hold(&self, puts: &[Put]) -> Result<bool> {
        let checked: Vec<&Put> = puts.iter().filter(|p| p.expect != Expect::Any).collect();
        let keys: Vec<String> = checked.iter().map(|p| p.key.clone()).collect();
        let found = self.read_versioned(&keys).await?;
        Ok(checked
            .iter()
            .zip(&found)
            .all(|(put, found)| expectation_holds(&put.expect, found.as_ref())))
    }
}

impl SwarmStore for DaprStore {
    fn read<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, Vec<Option<Versioned>>> {
        Box::pin(self.read_versioned(keys))
    }

    fn commit<'a>(
        &'a self,
        artifacts: &'a [Artifact],
        consumptions: &'a [Consumption],
        puts: &'a [Put],
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let artifact_items: Vec<common::StateItem> = artifacts
                .iter()
                .map(|a| with_ttl(item(artifact_key(&a.id), a.to_json(), None), a.ttl()))
                .collect();
            let record_items: Vec<common::StateItem> = consumptions
                .iter()
                .map(|c| {
                    let value = serde_json::to_vec(c).expect("a consumption record serialises");
                    with_ttl(item(consumption_key(c), value, None), c.ttl())
                })
                .collect();
            if !self.capabilities.uses_transactions() {
                // Outputs (and their index entries) first: a crash before the records re-runs
                // the agent, never loses outputs.
                self.save(artifact_items).await.map_err(grpc_error)?;
                if !self.capabilities.query {
                    self.index_add(&index_entries(artifacts, &[])).await?;
                }
                self.save(record_items).await.map_err(grpc_error)?;
                if !self.capabilities.query {
                    self.index_add(&index_entries(&[], consumptions)).await?;
                }
                for put in puts {
                    match self.save(vec![put_item(put)]).await {
                        Ok(()) => {}
                        Err(status) if status.code() == tonic::Code::Aborted => return Ok(false),
                        // Dapr's Redis store reports a failed etag or first-write as a
                        // script error (INTERNAL): is the expectation what failed?
                        Err(status) if status.code() == tonic::Code::Internal => {
                            if !self.expectations_hold(std::slice::from_ref(put)).await? {
                                return Ok(false);
                            }
                            return Err(grpc_error(status));
                        }
                        Err(status) => return Err(grpc_error(status)),
                    }
                }
                return Ok(true);
            }
            let entries = if self.capabilities.query {
                Default::default()
            } else {
                index_entries(artifacts, consumptions)
            };
            let mut backoff = Duration::from_millis(2);
            for attempt in 1..=MAX_ATTEMPTS {
                let mut operations: Vec<_> = artifact_items
                    .iter()
                    .chain(&record_items)
                    .cloned()
                    .map(upsert)
                    .collect();
                for (key, value, etag) in self.index_updates(&entries).await? {
                    operations.push(upsert(item(key, value, Some(etag))));
                }
                operations.extend(puts.iter().map(|p| upsert(put_item(p))));
                if operations.is_empty() {
                    return Ok(true);
                }
                let result = self
                    .client
                    .clone()
                    .execute_state_transaction(runtime::ExecuteStateTransactionRequest {
                        store_name: self.store(),
                        operations,
                        metadata: HashMap::new(),
                    })
                    .await;
                match result {
                    Ok(_) => return Ok(true),
                    // daprd reports an etag conflict inside a transaction as INTERNAL (some
                    // stores as ABORTED): ours, or one on an index record?
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Internal | tonic::Code::Aborted
                        ) =>
                    {
                        if !self.expectations_hold(puts).await? {
                            return Ok(false);
                        }
                        if entries.is_empty() || attempt == MAX_ATTEMPTS {
                            return Err(grpc_error(status));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    Err(status) => return Err(grpc_error(status)),
                }
            }
            Err(Error::Conflict {
                key: TYPES_INDEX.to_string(),
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    fn atomic(&self) -> bool {
        self.capabilities.uses_transactions()
    }

    fn get_many<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Option<Artifact>>> {
        Box::pin(super::get_many_by_key(self, ids))
    }
}

impl BlackboardStore for DaprStore {
    fn publish<'a>(&'a self, artifact: &'a Artifact) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.publish_artifact(artifact).await?;
            if !self.capabilities.query {
                self.index_add(&index_entries(std::slice::from_ref(artifact), &[]))
                    .await?;
            }
            Ok(())
        })
    }

    fn publish_outputs<'a>(
        &'a self,
        outputs: &'a [Artifact],
        consumptions: &'a [Consumption],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Nothing to expect: the commit cannot refuse.
            SwarmStore::commit(self, outputs, consumptions, &[])
                .await
                .map(|_| ())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Artifact>> {
        Box::pin(async move {
            match self.get_raw(artifact_key(id)).await? {
                Some((data, _)) => Ok(live(Artifact::from_json(&data)?)),
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
            let rows = if self.capabilities.query {
                self.query_all(pushed_filter(filter)).await?
            } else {
                let mut keys = Vec::new();
                if let Some(correlation) = &filter.correlation_id {
                    // One correlation's artifacts: its own index record, not the types'.
                    keys.extend(
                        self.index_members(&correlation_index(correlation))
                            .await?
                            .iter()
                            .map(|id| artifact_key(id)),
                    );
                } else {
                    let types = match &filter.type_names {
                        Some(types) => types.clone(),
                        None => self.index_members(TYPES_INDEX).await?,
                    };
                    for type_name in &types {
                        keys.extend(
                            self.index_members(&type_index(type_name))
                                .await?
                                .iter()
                                .map(|id| artifact_key(id)),
                        );
                    }
                }
                self.bulk_get(keys).await?
            };
            let mut selected = Vec::new();
            for (key, data) in rows {
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
            let rows = if self.capabilities.query {
                self.query_all(Some(json!({"EQ": {"artifact_id": artifact_id}})))
                    .await?
            } else {
                let keys = self.index_members(&consumption_index(artifact_id)).await?;
                self.bulk_get(keys.into_iter().collect()).await?
            };
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

/// The part of `filter` the Dapr query API evaluates in the store: types, producers and the
/// correlation id (the rest is checked on the results).
fn pushed_filter(filter: &Filter) -> Option<Value> {
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
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({ "AND": parts })),
    }
}

impl DaprStore {
    /// Upserts one artifact: a compare-and-set on the etag read (first-write when new),
    /// retried on conflicts, where the store has etags.
    async fn publish_artifact(&self, artifact: &Artifact) -> Result<()> {
        let key = artifact_key(&artifact.id);
        let value = artifact.to_json();
        if !self.capabilities.etag {
            return self
                .save(vec![with_ttl(item(key, value, None), artifact.ttl())])
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
                .save(vec![with_ttl(
                    item(key.clone(), value.clone(), Some(etag)),
                    artifact.ttl(),
                )])
                .await
            {
                Ok(()) => return Ok(()),
                Err(status) if may_be_conflict(&status) => {
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
    }
}
