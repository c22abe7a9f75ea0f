//! The gRPC services daprd calls, one module per operation family:
//! [`state`] (Init, Features, Ping, Get, Set, Delete), [`bulk`] (BulkGet, BulkSet, BulkDelete),
//! [`transact`] (Transact, MultiMaxSize) and [`query`] (Query).
//!
//! Every handler has the same shape: resolve the instance from `x-component-instance`,
//! convert the wire request to engine requests ([`convert`]), call the engine, convert the
//! result back, and map errors in exactly one place ([`crate::status::from_engine`]).

pub mod bulk;
pub mod convert;
pub mod query;
pub mod state;
pub mod transact;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::instances::InstanceRegistry;
use crate::proto::{self, state_store_server::StateStore};

/// The features Roost advertises: only what is real.
pub const FEATURES: &[&str] = &["ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"];

/// The component: every service shares one instance registry.
#[derive(Debug, Clone)]
pub struct RoostComponent {
    pub registry: Arc<InstanceRegistry>,
}

#[tonic::async_trait]
impl StateStore for RoostComponent {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::InitResponse>, Status> {
        state::init(&self.registry, request).await
    }

    async fn features(
        &self,
        _request: Request<proto::FeaturesRequest>,
    ) -> Result<Response<proto::FeaturesResponse>, Status> {
        Ok(Response::new(proto::FeaturesResponse {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        state::delete(&self.registry, request).await
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        state::get(&self.registry, request).await
    }

    async fn set(
        &self,
        request: Request<proto::SetRequest>,
    ) -> Result<Response<proto::SetResponse>, Status> {
        state::set(&self.registry, request).await
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        // A liveness answer that depends on nothing, Init included.
        Ok(Response::new(proto::PingResponse {}))
    }

    async fn bulk_delete(
        &self,
        request: Request<proto::BulkDeleteRequest>,
    ) -> Result<Response<proto::BulkDeleteResponse>, Status> {
        bulk::bulk_delete(&self.registry, request).await
    }

    async fn bulk_get(
        &self,
        request: Request<proto::BulkGetRequest>,
    ) -> Result<Response<proto::BulkGetResponse>, Status> {
        bulk::bulk_get(&self.registry, request).await
    }

    async fn bulk_set(
        &self,
        request: Request<proto::BulkSetRequest>,
    ) -> Result<Response<proto::BulkSetResponse>, Status> {
        bulk::bulk_set(&self.registry, request).await
    }
}
