//! Init, Features, Ping, Get, Set, Delete.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::config::InstanceConfig;
use crate::instances::InstanceRegistry;
use crate::proto;
use crate::service::convert;
use crate::status;

pub async fn init(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::InitRequest>,
) -> Result<Response<proto::InitResponse>, Status> {
    let name = InstanceRegistry::instance_name(&request)?;
    let properties = request
        .into_inner()
        .metadata
        .map(|m| m.properties)
        .unwrap_or_default();
    let (config, secrets) = InstanceConfig::from_metadata(&properties)
        .map_err(|e| status::bad_request(format!("Init of instance {name:?}: {e}")))?;
    registry.init(&name, config, secrets).await?;
    Ok(Response::new(proto::InitResponse {}))
}

pub async fn features(
    _request: Request<proto::FeaturesRequest>,
) -> Result<Response<proto::FeaturesResponse>, Status> {
    Ok(Response::new(proto::FeaturesResponse {
        features: super::FEATURES.iter().map(|f| f.to_string()).collect(),
    }))
}

/// A liveness answer that depends on nothing, Init included.
pub async fn ping(
    _request: Request<proto::PingRequest>,
) -> Result<Response<proto::PingResponse>, Status> {
    Ok(Response::new(proto::PingResponse {}))
}

pub async fn get(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::GetRequest>,
) -> Result<Response<proto::GetResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let key = request.into_inner().key;
    let record = instance
        .db
        .get(key)
        .await
        .map_err(|e| status::from_engine(&e))?;
    let response = convert::get_response(record);
    Ok(Response::new(response))
}

pub async fn set(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::SetRequest>,
) -> Result<Response<proto::SetResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    instance
        .db
        .set(convert::set_request(request.into_inner()))
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(proto::SetResponse {}))
}

pub async fn delete(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::DeleteRequest>,
) -> Result<Response<proto::DeleteResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    instance
        .db
        .delete(convert::delete_request(request.into_inner()))
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(proto::DeleteResponse {}))
}
