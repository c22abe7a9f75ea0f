//! `roost serve`: the gRPC server on the Unix socket, with reflection (v1alpha, which daprd
//! uses, and v1), health, and graceful shutdown.
//!
//! Shutdown: when `shutdown` resolves (SIGTERM or SIGINT in the binary), the server stops
//! accepting connections and lets in-flight calls finish; then every keyspace is flushed and
//! closed, and the socket file is removed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::instances::InstanceRegistry;
use crate::proto::{
    self, queriable_state_store_server::QueriableStateStoreServer,
    state_store_server::StateStoreServer,
    transactional_state_store_server::TransactionalStateStoreServer,
    transactional_store_multi_max_size_server::TransactionalStoreMultiMaxSizeServer,
};
use crate::service::RoostComponent;
use crate::socket;

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The socket file, `<folder>/<name>.sock`.
    pub socket_path: PathBuf,
    /// The component name daprd will see (`state.<name>`).
    pub name: String,
    pub data_dir: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// Largest request message accepted (daprd sends whole transactions in one message).
    pub max_request_bytes: usize,
    /// How long in-flight calls may run after a shutdown signal.
    pub shutdown_grace: std::time::Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Default `--max-request-bytes`: room for a transaction of several large values.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Default time in-flight calls get after SIGTERM (Kubernetes allows 30 s in all).
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub struct ServeError(pub String);

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeError {}

/// Serves until `shutdown` resolves, then drains, closes every keyspace and removes the socket.
/// `ready` is called once the socket accepts connections.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&ServeConfig),
) -> Result<(), ServeError> {
    let registry = Arc::new(
        InstanceRegistry::new(&config.data_dir, config.max_request_bytes).map_err(|e| {
            ServeError(format!(
                "cannot use data dir {}: {e}",
                config.data_dir.display()
            ))
        })?,
    );
    socket::prepare(&config.socket_path).map_err(|e| ServeError(e.to_string()))?;
    let listener = UnixListener::bind(&config.socket_path)
        .map_err(|e| ServeError(format!("cannot bind {}: {e}", config.socket_path.display())))?;
    socket::set_mode(&config.socket_path, config.socket_mode).map_err(|e| {
        ServeError(format!(
            "cannot set the mode of {}: {e}",
            config.socket_path.display()
        ))
    })?;

    let component = RoostComponent {
        registry: Arc::clone(&registry),
    };
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::admin::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| ServeError(format!("reflection setup failed: {e}")))?;
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| ServeError(format!("reflection setup failed: {e}")))?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StateStoreServer<RoostComponent>>()
        .await;

    let requests = Arc::new(crate::metrics::RequestMetrics::default());
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError(format!("cannot listen on {addr} for metrics: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| ServeError(e.to_string()))?;
            tracing::info!(address = %bound, "Prometheus metrics at http://{bound}/metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                Arc::clone(&requests),
                Arc::clone(&registry),
                async move {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        None => None,
    };

    let max = config.max_request_bytes;
    let router = Server::builder()
        .layer(crate::metrics::MetricsLayer(requests))
        .add_service(
            StateStoreServer::new(component.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            TransactionalStateStoreServer::new(component.clone()).max_decoding_message_size(max),
        )
        .add_service(
            QueriableStateStoreServer::new(component.clone()).max_decoding_message_size(max),
        )
        .add_service(TransactionalStoreMultiMaxSizeServer::new(component.clone()))
        .add_service(proto::admin::admin_server::AdminServer::new(component))
        .add_service(reflection_v1alpha)
        .add_service(reflection_v1)
        .add_service(health);

    tracing::info!(
        socket = %config.socket_path.display(),
        component = %format!("state.{}", config.name.to_lowercase()),
        data_dir = %config.data_dir.display(),
        socket_mode = %format!("{:o}", config.socket_mode),
        max_request_bytes = config.max_request_bytes,
        metrics = ?config.metrics_addr,
        "roost serving the Dapr state store API"
    );
    ready(&config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = std::pin::pin!(router.serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    let served = tokio::select! {
        result = &mut serving => result,
        () = shutdown => {
            let _ = stop.send(());
            // In-flight calls get `shutdown_grace` to finish; a client that keeps its
            // connection busy past that does not keep the process alive.
            match tokio::time::timeout(config.shutdown_grace, &mut serving).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(grace = ?config.shutdown_grace, "calls still in flight after the grace period; closing connections");
                    Ok(())
                }
            }
        }
    };
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    registry.close_all().await;
    if let Err(err) = std::fs::remove_file(&config.socket_path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %config.socket_path.display(), error = %err, "could not remove the socket file");
    }
    served.map_err(|e| ServeError(format!("the gRPC server failed: {e}")))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight calls and shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight calls and shutting down"),
    }
}
