//! `roost-sidecar`: a single-node stand-in for daprd's **state** building block, for
//! development and CI where daprd is not installed. It loads the Dapr component YAMLs of a
//! resources path, discovers pluggable components in the socket folder and initialises them
//! exactly as daprd does ([`pluggable`]), then serves the app-facing Dapr API for state over
//! gRPC ([`grpc`]) and HTTP ([`http`]). It is not a Dapr replacement: no service invocation,
//! pub/sub, actors, workflows, mTLS or placement — those answer "not available".

pub mod api;
pub mod daprd;
pub mod gojson;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod local;
pub mod pluggable;
pub mod resources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::StateApi;
use crate::keys::KeyPrefix;
use crate::pluggable::StateComponent;
use crate::resources::Placeholders;

/// The generated app-facing API: `runtime::v1` (state RPCs and GetMetadata only) and the
/// `common::v1` messages it uses, nested as the generated paths expect.
#[allow(clippy::all, missing_docs, missing_debug_implementations)]
pub mod pb {
    pub mod runtime {
        pub mod v1 {
            tonic::include_proto!("dapr.proto.runtime.v1");
        }
    }
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("dapr.proto.common.v1");
        }
    }
}

pub use pb::common::v1 as common;
pub use pb::runtime::v1 as runtime;

/// daprd's default limit on app request bodies (`--max-body-size`, 4 MB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

/// A random UUID v4 (for the `{uuid}` placeholder).
pub fn uuid_v4() -> String {
    roost_engine::uuid_v4()
}

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub app_id: String,
    pub namespace: Option<String>,
    pub resources_paths: Vec<PathBuf>,
    pub socket_folder: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub max_body_bytes: usize,
    /// How long open app connections may keep the sidecar running after the shutdown signal
    /// (in-flight calls finish; idle keep-alive connections would otherwise hold it forever).
    pub shutdown_grace: std::time::Duration,
}

impl SidecarConfig {
    /// For `app_id` with the resources at `resources`, in front of the components in
    /// `socket_folder`, on loopback ports the kernel picks, with daprd's defaults otherwise
    /// (as tests start it).
    pub fn on_loopback(
        app_id: &str,
        resources: &std::path::Path,
        socket_folder: &std::path::Path,
    ) -> SidecarConfig {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        SidecarConfig {
            app_id: app_id.to_string(),
            namespace: None,
            resources_paths: vec![resources.to_path_buf()],
            socket_folder: socket_folder.to_path_buf(),
            grpc_addr: loopback,
            http_addr: loopback,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// The default of [`SidecarConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the sidecar ended up serving, for the ready line.
#[derive(Debug, Clone)]
pub struct Ready {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// `name (type)` of each state store.
    pub stores: Vec<String>,
}

/// The version string the metadata APIs report.
pub fn runtime_version() -> String {
    format!("roost-sidecar/{}", env!("CARGO_PKG_VERSION"))
}

/// Loads the components, initialises them, binds both listeners, calls `ready`, and serves
/// until `shutdown` completes.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&Ready),
) -> Result<(), String> {
    let placeholders = Placeholders {
        app_id: config.app_id.clone(),
        namespace: config.namespace.clone(),
    };
    let loaded = resources::load(&config.resources_paths, &placeholders)?;
    for skipped in &loaded.skipped {
        tracing::warn!("{skipped}");
    }
    let discovered = match pluggable::discover(&config.socket_folder).await {
        Ok(found) => found,
        Err(why) => {
            tracing::error!("could not initialize pluggable components: {why}");
            Default::default()
        }
    };
    let mut stores = Vec::new();
    for spec in &loaded.state_stores {
        let outcome = async {
            if !matches!(spec.version.as_str(), "" | "v0" | "v1") {
                return Err(format!(
                    "couldn't find state store {}/{}: pluggable components register without \
                     a version; use version v1",
                    spec.component_type, spec.version
                ));
            }
            let socket = discovered
                .get(&spec.component_type.to_lowercase())
                .ok_or_else(|| {
                    let version = if spec.version.is_empty() {
                        "v1"
                    } else {
                        &spec.version
                    };
                    format!(
                        "couldn't find state store {}/{version}: no socket serving it in {} \
                         (start the component first: the folder is listed once, at startup)",
                        spec.component_type,
                        config.socket_folder.display()
                    )
                })?;
            let prefix = KeyPrefix::resolve(
                &spec.metadata,
                &spec.name,
                &config.app_id,
                config.namespace.as_deref(),
            )?;
            StateComponent::init(spec, socket, prefix).await
        }
        .await;
        match outcome {
            Ok(store) => {
                tracing::info!(name = %store.name, r#type = %store.component_type, features = ?store.features, "component loaded");
                stores.push(store);
            }
            Err(why) if spec.ignore_errors => {
                tracing::warn!(
                    "component {:?} ({}) failed and is skipped (ignoreErrors): {why}",
                    spec.name,
                    spec.source.display()
                );
            }
            Err(why) => {
                return Err(format!(
                    "component {:?} ({}) failed to init: {why}",
                    spec.name,
                    spec.source.display()
                ));
            }
        }
    }
    let api = Arc::new(StateApi::new(config.app_id.clone(), stores));
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (gRPC): {e}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (HTTP): {e}", config.http_addr))?;
    let grpc_addr = grpc_listener.local_addr().map_err(|e| e.to_string())?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
    ready(&Ready {
        grpc_addr,
        http_addr,
        stores: api
            .stores()
            .map(|s| format!("{} ({})", s.name, s.component_type))
            .collect(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let deadline_rx = stop_rx.clone();

    let dapr = grpc::StateOnly::new(
        grpc::DaprApi {
            api: api.clone(),
            runtime_version: runtime_version(),
        },
        config.max_body_bytes,
    );
    let grpc_server = tonic::transport::Server::builder()
        .add_service(dapr)
        .serve_with_incoming_shutdown(
            // TCP_NODELAY, as daprd and the SDKs use: without it, small responses wait for
            // the peer's delayed ACK (about 40 ms on Linux).
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stopped(stop_rx.clone()),
        );
    let http_app = http::router(api, runtime_version(), config.max_body_bytes);
    let http_server = axum::serve(http_listener, http_app).with_graceful_shutdown(stopped(stop_rx));
    let servers = async { tokio::join!(grpc_server, async { http_server.await }) };
    let grace = config.shutdown_grace;
    let deadline = async move {
        stopped(deadline_rx).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        (grpc_result, http_result) = servers => {
            grpc_result.map_err(|e| format!("gRPC server: {e}"))?;
            http_result.map_err(|e| format!("HTTP server: {e}"))?;
        }
        () = deadline => {
            tracing::warn!(?grace, "app connections still open after the shutdown grace: closing them");
        }
    }
    Ok(())
}

/// The runtime the stand-in (and `LocalDapr`'s `roost serve`) run on inside a test process:
/// two workers, beside the test's own.
pub(crate) fn in_process_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// The stand-in running inside this process on a runtime thread of its own, as the tests of
/// the component and the blackboard start it; stops (gracefully) when dropped.
pub struct InProcess {
    /// Where it serves, once ready.
    pub ready: Ready,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts it with `config` and waits (at most 30 s) until it serves; a configuration it
    /// cannot load is the error [`run`] gives.
    pub fn start(config: SidecarConfig) -> Result<InProcess, String> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Ready, String>>();
        let thread = std::thread::spawn(move || {
            let runtime = match in_process_runtime() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let ready = ready_tx.clone();
            let result = runtime.block_on(run(
                config,
                async move {
                    let _ = stopped.await;
                },
                move |r| {
                    let _ = ready.send(Ok(r.clone()));
                },
            ));
            if let Err(why) = result {
                let _ = ready_tx.send(Err(why));
            }
        });
        let ready = match ready_rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(ready)) => ready,
            Ok(Err(why)) => {
                let _ = thread.join();
                return Err(why);
            }
            Err(_) => return Err("the sidecar did not become ready within 30 s".into()),
        };
        Ok(InProcess {
            ready,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Whether it still serves (it stops by itself only on a fatal error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
