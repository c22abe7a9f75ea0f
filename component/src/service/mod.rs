//! The gRPC services daprd calls, one module per operation family:
//! [`state`] (Init, Features, Ping, Get, Set, Delete), [`bulk`] (BulkGet, BulkSet, BulkDelete),
//! [`transact`] (Transact, MultiMaxSize) and [`query`] (Query).
//!
//! Every handler has the same shape, for the Dapr services here and Roost's admin service
//! (`crate::admin::service`) alike: a free function of the registry and the request that
//! resolves the instance from `x-component-instance`, converts the wire request to engine
//! requests ([`convert`]), calls the engine, converts the result back, and maps errors in one
//! place ([`crate::status`]). [`answer`] calls the Dapr handlers for the transport; the
//! admin service's trait implementation (tonic's, for its streaming `Snapshot`) only forwards.

pub mod bulk;
pub mod convert;
pub mod query;
pub mod state;
pub mod transact;

use std::sync::Arc;

use bytes::Bytes;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::admin::service as admin;
use crate::config::DAPRD_MAX_RESPONSE_BYTES;
use crate::grpc;
use crate::instances::InstanceRegistry;
use crate::proto::{self, admin::admin_server::Admin};
use crate::routes::Unary;

/// The features Roost advertises: only what is real.
pub const FEATURES: &[&str] = &["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"];

/// Roost's admin service on the socket (tonic's generated server): it shares the instance
/// registry with the Dapr handlers.
#[derive(Debug, Clone)]
pub struct RoostComponent {
    pub registry: Arc<InstanceRegistry>,
}

/// Answers one unary call of the Dapr services (`crate::routes::Unary`): decodes its request
/// message, calls its handler with the call's metadata, and encodes the response message with
/// its gRPC prefix. The transport serves these calls on HTTP/2 itself (`crate::transport`).
pub async fn answer(
    registry: &Arc<InstanceRegistry>,
    method: Unary,
    metadata: MetadataMap,
    message: Bytes,
) -> Result<Bytes, Status> {
    // Writes wait for their commit: their futures are boxed (one allocation, against a write's
    // ~90 000 instructions), so the reads' future, which every call's state is sized by, stays
    // small.
    match method {
        Unary::Get => unary(method, metadata, message, |r| state::get(registry, r)).await,
        Unary::BulkGet => unary(method, metadata, message, |r| bulk::bulk_get(registry, r)).await,
        Unary::Set => {
            Box::pin(unary(method, metadata, message, |r| {
                state::set(registry, r)
            }))
            .await
        }
        Unary::Delete => {
            Box::pin(unary(method, metadata, message, |r| {
                state::delete(registry, r)
            }))
            .await
        }
        Unary::BulkSet => {
            Box::pin(unary(method, metadata, message, |r| {
                bulk::bulk_set(registry, r)
            }))
            .await
        }
        Unary::BulkDelete => {
            Box::pin(unary(method, metadata, message, |r| {
                bulk::bulk_delete(registry, r)
            }))
            .await
        }
        Unary::Transact => {
            Box::pin(unary(method, metadata, message, |r| {
                transact::transact(registry, r)
            }))
            .await
        }
        Unary::Query => {
            Box::pin(unary(method, metadata, message, |r| {
                query::query(registry, r)
            }))
            .await
        }
        Unary::Init => {
            Box::pin(unary(method, metadata, message, |r| {
                state::init(registry, r)
            }))
            .await
        }
        Unary::MultiMaxSize => {
            unary(method, metadata, message, |r| {
                transact::multi_max_size(registry, r)
            })
            .await
        }
        Unary::Features => unary(method, metadata, message, state::features).await,
        Unary::Ping => unary(method, metadata, message, state::ping).await,
    }
}

/// One unary call: the request message decoded, the handler called, the response framed.
async fn unary<Req, Resp, Fut>(
    method: Unary,
    metadata: MetadataMap,
    message: Bytes,
    handler: impl FnOnce(Request<Req>) -> Fut,
) -> Result<Bytes, Status>
where
    Req: prost::Message + Default,
    Resp: grpc::Reply,
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
{
    let request = grpc::decode::<Req>(message)?;
    let request = Request::from_parts(metadata, tonic::Extensions::default(), request);
    let response = handler(request).await?;
    // daprd cannot receive a message over its limit: such an answer is an error instead
    // (measured once, for the check and the framing).
    response
        .into_inner()
        .framed(DAPRD_MAX_RESPONSE_BYTES)
        .map_err(|size| convert::response_too_large(method, size))
}

#[tonic::async_trait]
impl Admin for RoostComponent {
    async fn scan(
        &self,
        request: Request<proto::admin::ScanRequest>,
    ) -> Result<Response<proto::admin::ScanResponse>, Status> {
        admin::scan(&self.registry, request).await
    }

    async fn stats(
        &self,
        request: Request<proto::admin::StatsRequest>,
    ) -> Result<Response<proto::admin::StatsResponse>, Status> {
        admin::stats(&self.registry, request).await
    }

    type SnapshotStream = admin::SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<proto::admin::SnapshotRequest>,
    ) -> Result<Response<admin::SnapshotStream>, Status> {
        admin::snapshot(&self.registry, request).await
    }

    async fn get(
        &self,
        request: Request<proto::admin::GetRequest>,
    ) -> Result<Response<proto::admin::GetResponse>, Status> {
        admin::get(&self.registry, request).await
    }

    async fn set(
        &self,
        request: Request<proto::admin::SetRequest>,
    ) -> Result<Response<proto::admin::SetResponse>, Status> {
        admin::set(&self.registry, request).await
    }

    async fn query(
        &self,
        request: Request<proto::admin::QueryRequest>,
    ) -> Result<Response<proto::admin::QueryResponse>, Status> {
        admin::query(&self.registry, request).await
    }
}
