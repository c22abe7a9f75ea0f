//! The gRPC services daprd calls, one module per operation family:
//! [`state`] (Init, Features, Ping, Get, Set, Delete), [`bulk`] (BulkGet, BulkSet, BulkDelete),
//! [`transact`] (Transact, MultiMaxSize) and [`query`] (Query).
//!
//! Every handler has the same shape, for the Dapr services here and Roost's admin service
//! (`crate::admin::service`) alike: a free function of the registry and the request that
//! resolves the instance from `x-component-instance`, converts the wire request to engine
//! requests ([`convert`]), calls the engine, converts the result back, and maps errors in one
//! place ([`crate::status`]). The trait implementations below only forward to them.

pub mod bulk;
pub mod convert;
pub mod query;
pub mod state;
pub mod transact;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::admin::service as admin;
use crate::instances::InstanceRegistry;
use crate::proto::{
    self, admin::admin_server::Admin, queriable_state_store_server::QueriableStateStore,
    state_store_server::StateStore, transactional_state_store_server::TransactionalStateStore,
    transactional_store_multi_max_size_server::TransactionalStoreMultiMaxSize,
};

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

#[tonic::async_trait]
impl TransactionalStateStore for RoostComponent {
    async fn transact(
        &self,
        request: Request<proto::TransactionalStateRequest>,
    ) -> Result<Response<proto::TransactionalStateResponse>, Status> {
        transact::transact(&self.registry, request).await
    }
}

#[tonic::async_trait]
impl TransactionalStoreMultiMaxSize for RoostComponent {
    async fn multi_max_size(
        &self,
        request: Request<proto::MultiMaxSizeRequest>,
    ) -> Result<Response<proto::MultiMaxSizeResponse>, Status> {
        transact::multi_max_size(&self.registry, request).await
    }
}

#[tonic::async_trait]
impl QueriableStateStore for RoostComponent {
    async fn query(
        &self,
        request: Request<proto::QueryRequest>,
    ) -> Result<Response<proto::QueryResponse>, Status> {
        query::query(&self.registry, request).await
    }
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
