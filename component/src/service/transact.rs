//! Transact (ordered, all-or-nothing) and MultiMaxSize.

use std::sync::Arc;

use roost_engine::Operation;
use tonic::{Request, Response, Status};

use crate::instances::InstanceRegistry;
use crate::proto::{self, transactional_state_operation::Request as OperationRequest};
use crate::service::convert;
use crate::status;

pub async fn transact(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::TransactionalStateRequest>,
) -> Result<Response<proto::TransactionalStateResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let operations = request
        .into_inner()
        .operations
        .into_iter()
        .enumerate()
        .map(|(index, op)| match op.request {
            Some(OperationRequest::Set(set)) => Ok(Operation::Set(convert::set_request(set))),
            Some(OperationRequest::Delete(delete)) => {
                Ok(Operation::Delete(convert::delete_request(delete)))
            }
            None => Err(status::bad_request(format!(
                "transaction operation {index} is neither a set nor a delete"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    instance
        .db
        .transact(operations)
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(proto::TransactionalStateResponse {}))
}

pub async fn multi_max_size(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::MultiMaxSizeRequest>,
) -> Result<Response<proto::MultiMaxSizeResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    Ok(Response::new(proto::MultiMaxSizeResponse {
        max_size: instance.config.max_transaction_ops as i64,
    }))
}
