//! Talking to a component over its Unix socket the way daprd does: a gRPC channel on the
//! socket, reflection v1alpha listing, and the `x-component-instance` header. Used by
//! `roost doctor`, the online admin commands, the daprd stand-in and the integration tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_reflection::pb::v1alpha::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::instances::INSTANCE_HEADER;

/// Opens a gRPC channel over the Unix socket at `path`.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_path_buf();
    Endpoint::from_static("http://roost.invalid")
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Lists the services through gRPC reflection **v1alpha**, exactly as daprd discovers them.
pub async fn list_services_v1alpha(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("reflection returned no response"))?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        Some(MessageResponse::ErrorResponse(err)) => Err(tonic::Status::unknown(err.error_message)),
        _ => Err(tonic::Status::unknown("unexpected reflection response")),
    }
}

/// Wraps `message` in a request carrying `x-component-instance: instance`, as daprd sends it.
pub fn for_instance<T>(instance: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = instance.parse() {
        request.metadata_mut().insert(INSTANCE_HEADER, value);
    }
    request
}
