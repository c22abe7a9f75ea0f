//! Transact (ordered, all-or-nothing) and MultiMaxSize.

use roost_engine::Operation;
use tonic::{Request, Response, Status};

use crate::proto::{
    self, transactional_state_operation::Request as OperationRequest,
    transactional_state_store_server::TransactionalStateStore,
    transactional_store_multi_max_size_server::TransactionalStoreMultiMaxSize,
};
use crate::service::{RoostComponent, convert};
use crate::status;

#[tonic::async_trait]
impl TransactionalStateStore for RoostComponent {
    async fn transact(
        &self,
        request: Request<proto::TransactionalStateRequest>,
    ) -> Result<Response<proto::TransactionalStateResponse>, Status> {
        let instance = self.registry.resolve(&request).await?;
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
}

#[tonic::async_trait]
impl TransactionalStoreMultiMaxSize for RoostComponent {
    async fn multi_max_size(
        &self,
        request: Request<proto::MultiMaxSizeRequest>,
    ) -> Result<Response<proto::MultiMaxSizeResponse>, Status> {
        let instance = self.registry.resolve(&request).await?;
        Ok(Response::new(proto::MultiMaxSizeResponse {
            max_size: instance.config.max_transaction_ops as i64,
        }))
    }
}
