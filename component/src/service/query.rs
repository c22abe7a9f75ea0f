//! Query: not implemented yet. `QUERY_API` is not advertised in `Features`, and a call gets
//! `UNIMPLEMENTED` with a message saying so.

use tonic::{Request, Response, Status};

use crate::proto::{self, queriable_state_store_server::QueriableStateStore};
use crate::service::RoostComponent;

#[tonic::async_trait]
impl QueriableStateStore for RoostComponent {
    async fn query(
        &self,
        _request: Request<proto::QueryRequest>,
    ) -> Result<Response<proto::QueryResponse>, Status> {
        Err(Status::unimplemented(
            "the state query API is not implemented by this Roost build (QUERY_API is not in Features)",
        ))
    }
}
