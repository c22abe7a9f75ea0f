//! Any Dapr state store through a real daprd, driven the way an SDK drives it: daprd's gRPC API
//! (`dapr.proto.runtime.v1.Dapr`) with the official Rust SDK's generated client, one HTTP/2
//! connection per worker. The store behind daprd is whatever its one component YAML names:
//! Roost (pluggable, over its socket), Redis, PostgreSQL v2, SQLite or in-memory.
//!
//! Keys: the harness's keys carry the `<appId>||` prefix that daprd adds; this client sends
//! the app's part, daprd (app id `bench`) adds the prefix back, so every store holds the same
//! keys as the direct targets.

use std::collections::HashMap;

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as runtime;
use runtime::dapr_client::DaprClient as Api;
use tonic::transport::Channel;

use super::{Client, Fut, Item, OpError};

/// The component name every daprd target's YAML gives its store.
pub const STORE: &str = "statestore";
/// The app id of every daprd the harness starts (so keys are `bench||…`).
pub const APP_ID: &str = "bench";
/// The components of the query workloads (daprd-roost only): the same documents in a store with
/// a secondary index on the query field and in one without.
pub const QUERY_INDEXED_STORE: &str = "query-indexed";
pub const QUERY_SCAN_STORE: &str = "query-scan";
/// Items per SaveState call while preloading.
const LOAD_BATCH: usize = 100;

/// One worker's connection to daprd's gRPC API.
pub struct DaprdClient {
    api: Api<Channel>,
    /// Whether daprd has the query components ([`QUERY_INDEXED_STORE`], [`QUERY_SCAN_STORE`]).
    queries: bool,
}

impl DaprdClient {
    pub async fn connect(endpoint: &str, queries: bool) -> Result<DaprdClient, OpError> {
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(OpError::failed)?
            .connect()
            .await
            .map_err(OpError::failed)?;
        Ok(DaprdClient {
            api: Api::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            queries,
        })
    }
}

/// The app's key: the harness key without daprd's `<appId>||` prefix.
fn app_key(key: &str) -> &str {
    key.rsplit("||").next().unwrap_or(key)
}

fn status(err: tonic::Status) -> OpError {
    match err.code() {
        // daprd's answer to an etag mismatch or a first-write on a live key.
        tonic::Code::Aborted => OpError::Conflict,
        _ => OpError::Failed(format!("{:?}: {}", err.code(), err.message())),
    }
}

fn item(key: &str, value: &[u8], etag: Option<&str>, first_write: bool) -> common::StateItem {
    common::StateItem {
        key: app_key(key).to_string(),
        value: value.to_vec(),
        etag: etag.map(|value| common::Etag {
            value: value.to_string(),
        }),
        options: first_write.then_some(common::StateOptions {
            concurrency: common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
            consistency: 0,
        }),
        ..Default::default()
    }
}

impl DaprdClient {
    async fn save(&self, items: Vec<common::StateItem>) -> Result<(), OpError> {
        self.save_to(STORE, items).await
    }

    async fn save_to(&self, store: &str, items: Vec<common::StateItem>) -> Result<(), OpError> {
        self.api
            .clone()
            .save_state(runtime::SaveStateRequest {
                store_name: store.into(),
                states: items,
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    async fn load_all(&self, store: &str, items: &[(String, Vec<u8>)]) -> Result<(), OpError> {
        for batch in items.chunks(LOAD_BATCH) {
            self.save_to(
                store,
                batch.iter().map(|(k, v)| item(k, v, None, false)).collect(),
            )
            .await?;
        }
        Ok(())
    }
}

impl Client for DaprdClient {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async { Err(OpError::Failed("daprd's API has no ping".into())) })
    }

    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>> {
        Box::pin(async move {
            let response = self
                .api
                .clone()
                .get_state(runtime::GetStateRequest {
                    store_name: STORE.into(),
                    key: app_key(key).into(),
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            if response.data.is_empty() && response.etag.is_empty() {
                return Ok(None);
            }
            Ok(Some((response.data, response.etag)))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()> {
        Box::pin(self.save(vec![item(key, value, etag, first_write)]))
    }

    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize> {
        Box::pin(async move {
            let response = self
                .api
                .clone()
                .get_bulk_state(runtime::GetBulkStateRequest {
                    store_name: STORE.into(),
                    keys: keys.iter().map(|k| app_key(k).to_string()).collect(),
                    parallelism: 0,
                    metadata: HashMap::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            Ok(response.items.iter().filter(|i| !i.data.is_empty()).count())
        })
    }

    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            let operations = items
                .iter()
                .map(|(k, v)| runtime::TransactionalStateOperation {
                    operation_type: "upsert".into(),
                    request: Some(item(k, v, None, false)),
                })
                .collect();
            self.api
                .clone()
                .execute_state_transaction(runtime::ExecuteStateTransactionRequest {
                    store_name: STORE.into(),
                    operations,
                    metadata: HashMap::new(),
                })
                .await
                .map_err(status)?;
            Ok(())
        })
    }

    /// daprd's `QueryStateAlpha1` with the query as JSON text, as the SDKs send it.
    fn query_eq<'a>(&'a self, value: &'a str, indexed: bool) -> Fut<'a, usize> {
        Box::pin(async move {
            if !self.queries {
                return Err(OpError::Failed("this daprd has no query components".into()));
            }
            let query = serde_json::json!({
                "filter": { "EQ": { super::QUERY_FIELD: value } },
            })
            .to_string();
            let response = self
                .api
                .clone()
                .query_state_alpha1(runtime::QueryStateRequest {
                    store_name: if indexed {
                        QUERY_INDEXED_STORE
                    } else {
                        QUERY_SCAN_STORE
                    }
                    .into(),
                    query,
                    metadata: HashMap::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            Ok(response.results.len())
        })
    }

    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(self.load_all(STORE, items))
    }

    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        Box::pin(async move {
            if !self.queries {
                return Err(OpError::Failed("this daprd has no query components".into()));
            }
            self.load_all(QUERY_INDEXED_STORE, items).await?;
            self.load_all(QUERY_SCAN_STORE, items).await
        })
    }
}

/// The component YAML of a daprd target, `statestore` of the given type and metadata.
pub fn component_yaml(kind: &str, version: &str, metadata: &[(&str, &str)]) -> String {
    named_component_yaml(STORE, kind, version, metadata)
}

/// One component document named `name` (several are joined with `---` in one file).
pub fn named_component_yaml(
    name: &str,
    kind: &str,
    version: &str,
    metadata: &[(&str, &str)],
) -> String {
    let mut yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  \
         type: {kind}\n  version: {version}\n"
    );
    if metadata.is_empty() {
        yaml.push_str("  metadata: []\n");
    } else {
        yaml.push_str("  metadata:\n");
    }
    for (name, value) in metadata {
        let value = serde_json::to_string(value).expect("a string");
        yaml.push_str(&format!("  - name: {name}\n    value: {value}\n"));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_keys_drop_daprds_prefix() {
        assert_eq!(app_key("bench||key-00000001"), "key-00000001");
        assert_eq!(app_key("plain"), "plain");
    }

    #[test]
    fn component_yaml_quotes_values() {
        let yaml = component_yaml("state.redis", "v1", &[("redisHost", "127.0.0.1:6379")]);
        assert!(yaml.contains("type: state.redis"), "{yaml}");
        assert!(yaml.contains("value: \"127.0.0.1:6379\""), "{yaml}");
        assert!(component_yaml("state.in-memory", "v1", &[]).contains("  metadata: []\n"));
    }
}
