//! The app-facing gRPC API (`dapr.proto.runtime.v1.Dapr`): the state RPCs and GetMetadata.
//! Every other method of the service answers UNIMPLEMENTED with a message naming the building
//! block `roost-sidecar` does not provide.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::api::{ApiError, DeleteItem, SaveItem, StateApi, TxOp};
use crate::{gojson, runtime};
use roost_component::proto;

use runtime::dapr_server::{Dapr, DaprServer};

/// The state RPCs this sidecar serves (path suffixes of `/dapr.proto.runtime.v1.Dapr/`).
const SERVED: [&str; 8] = [
    "GetState",
    "GetBulkState",
    "SaveState",
    "QueryStateAlpha1",
    "DeleteState",
    "DeleteBulkState",
    "ExecuteStateTransaction",
    "GetMetadata",
];

#[derive(Clone)]
pub struct DaprApi {
    pub api: Arc<StateApi>,
    pub runtime_version: String,
}

fn save_item(item: proto_common::StateItem) -> SaveItem {
    let content_type = item
        .metadata
        .get("contentType")
        .cloned()
        .unwrap_or_default();
    // gRPC values pass through byte for byte, unless the app says they are JSON: then daprd
    // decodes and re-encodes them (pluggable spec §5.2).
    let value = if content_type.eq_ignore_ascii_case("application/json") {
        gojson::reencode(&item.value)
            .map(bytes::Bytes::from)
            .unwrap_or(item.value)
    } else {
        item.value
    };
    SaveItem {
        key: item.key,
        value,
        etag: item.etag.map(|e| e.value),
        metadata: item.metadata,
        options: item.options.map(options),
        content_type,
    }
}

fn delete_item(item: proto_common::StateItem) -> DeleteItem {
    DeleteItem {
        key: item.key,
        etag: item.etag.map(|e| e.value),
        metadata: item.metadata,
        options: item.options.map(options),
    }
}

fn options(options: proto_common::StateOptions) -> proto::StateOptions {
    proto::StateOptions {
        concurrency: options.concurrency,
        consistency: options.consistency,
    }
}

use crate::common as proto_common;

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn get_state(
        &self,
        request: Request<runtime::GetStateRequest>,
    ) -> Result<Response<runtime::GetStateResponse>, Status> {
        let r = request.into_inner();
        let found = self
            .api
            .get(&r.store_name, &r.key, r.consistency, r.metadata)
            .await
            .map_err(|e| e.to_status())?;
        let found = found.unwrap_or_default();
        Ok(Response::new(runtime::GetStateResponse {
            data: found.data,
            etag: found.etag,
            metadata: found.metadata,
        }))
    }

    async fn get_bulk_state(
        &self,
        request: Request<runtime::GetBulkStateRequest>,
    ) -> Result<Response<runtime::GetBulkStateResponse>, Status> {
        let r = request.into_inner();
        let items = self
            .api
            .bulk_get(&r.store_name, &r.keys, i64::from(r.parallelism), r.metadata)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(runtime::GetBulkStateResponse {
            items: items
                .into_iter()
                .map(|i| runtime::BulkStateItem {
                    key: i.key,
                    data: i.data,
                    etag: i.etag,
                    error: i.error,
                    metadata: i.metadata,
                })
                .collect(),
        }))
    }

    async fn save_state(
        &self,
        request: Request<runtime::SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let items = r.states.into_iter().map(save_item).collect();
        self.api
            .save(&r.store_name, items)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn query_state_alpha1(
        &self,
        request: Request<runtime::QueryStateRequest>,
    ) -> Result<Response<runtime::QueryStateResponse>, Status> {
        let r = request.into_inner();
        let result = self
            .api
            .query(&r.store_name, r.query.as_bytes(), r.metadata)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(runtime::QueryStateResponse {
            results: result
                .results
                .into_iter()
                .map(|i| runtime::QueryStateItem {
                    key: i.key,
                    data: i.data,
                    etag: i.etag,
                    error: i.error,
                })
                .collect(),
            token: result.token,
            metadata: result.metadata,
        }))
    }

    async fn delete_state(
        &self,
        request: Request<runtime::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let item = DeleteItem {
            key: r.key,
            etag: r.etag.map(|e| e.value),
            metadata: r.metadata,
            options: r.options.map(options),
        };
        self.api
            .delete(&r.store_name, vec![item])
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(
        &self,
        request: Request<runtime::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let items = r.states.into_iter().map(delete_item).collect();
        self.api
            .delete(&r.store_name, items)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        request: Request<runtime::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let mut operations = Vec::with_capacity(r.operations.len());
        for op in r.operations {
            let item = op.request.unwrap_or_default();
            operations.push(match op.operation_type.as_str() {
                "upsert" => TxOp::Upsert(save_item(item)),
                "delete" => TxOp::Delete(delete_item(item)),
                other => {
                    return Err(ApiError::new(
                        400,
                        "ERR_NOT_SUPPORTED_STATE_OPERATION",
                        tonic::Code::Unimplemented,
                        format!("operation type {other} not supported"),
                    )
                    .to_status());
                }
            });
        }
        self.api
            .transact(&r.store_name, operations, r.metadata)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(()))
    }

    async fn get_metadata(
        &self,
        _request: Request<runtime::GetMetadataRequest>,
    ) -> Result<Response<runtime::GetMetadataResponse>, Status> {
        Ok(Response::new(runtime::GetMetadataResponse {
            id: self.api.app_id.clone(),
            registered_components: self
                .api
                .stores()
                .map(|s| runtime::RegisteredComponents {
                    name: s.name.clone(),
                    r#type: s.component_type.clone(),
                    version: s.version.clone(),
                    capabilities: s.capabilities(),
                })
                .collect(),
            extended_metadata: HashMap::from([(
                "roost-sidecar".to_string(),
                "state building block only".to_string(),
            )]),
            runtime_version: self.runtime_version.clone(),
            enabled_features: Vec::new(),
        }))
    }
}

/// The building block a Dapr API method belongs to, for the UNIMPLEMENTED message.
pub fn building_block(method: &str) -> &'static str {
    let has = |part: &str| method.contains(part);
    if has("Actor") || has("Reminder") || has("Timer") {
        "actors"
    } else if has("Workflow") {
        "workflows"
    } else if has("Publish") || has("Subscribe") && has("Topic") || has("PubSub") {
        "pub/sub"
    } else if has("Binding") {
        "bindings"
    } else if has("Secret") {
        "secrets"
    } else if has("Configuration") {
        "configuration"
    } else if has("Lock") {
        "distributed lock"
    } else if has("Encrypt") || has("Decrypt") || has("Crypto") {
        "cryptography"
    } else if has("Job") {
        "jobs"
    } else if has("Conver") {
        "conversation"
    } else if has("Invoke") {
        "service invocation"
    } else if has("Metadata") {
        "metadata"
    } else if has("Shutdown") {
        "sidecar lifecycle"
    } else if has("State") {
        "state"
    } else {
        "this API"
    }
}

/// Serves [`DaprServer`] for the state RPCs and answers the rest of `dapr.proto.runtime.v1.Dapr`
/// itself.
#[derive(Clone)]
pub struct StateOnly {
    inner: DaprServer<DaprApi>,
}

impl StateOnly {
    pub fn new(api: DaprApi, max_message_bytes: usize) -> StateOnly {
        StateOnly {
            inner: DaprServer::new(api)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(usize::MAX),
        }
    }
}

impl NamedService for StateOnly {
    const NAME: &'static str = "dapr.proto.runtime.v1.Dapr";
}

impl tower::Service<http::Request<Body>> for StateOnly {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if SERVED.contains(&method.as_str()) {
            return Box::pin(self.inner.call(request));
        }
        let status = Status::unimplemented(format!(
            "roost-sidecar serves only the Dapr state building block: {method} ({}) is not \
             available; run the app with daprd for it",
            building_block(&method)
        ));
        Box::pin(async move { Ok(status.into_http()) })
    }
}

#[cfg(test)]
mod tests {
    use super::building_block;

    #[test]
    fn building_blocks_are_named() {
        assert_eq!(building_block("PublishEvent"), "pub/sub");
        assert_eq!(building_block("SubscribeTopicEventsAlpha1"), "pub/sub");
        assert_eq!(building_block("InvokeActor"), "actors");
        assert_eq!(building_block("GetSecret"), "secrets");
        assert_eq!(building_block("SubscribeConfiguration"), "configuration");
        assert_eq!(building_block("TryLockAlpha1"), "distributed lock");
        assert_eq!(building_block("StartWorkflowBeta1"), "workflows");
        assert_eq!(building_block("InvokeBinding"), "bindings");
        assert_eq!(building_block("InvokeService"), "service invocation");
        assert_eq!(building_block("ScheduleJobAlpha1"), "jobs");
    }
}
