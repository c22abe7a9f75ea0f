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

use crate::authority::AuthorityFix;
use crate::instances::InstanceRegistry;
use crate::proto;
use crate::routes::Services;
use crate::service::RoostComponent;
use crate::socket;
use crate::transport::Transport;

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
    /// Threads serving gRPC connections, each connection on one of them
    /// ([`default_transport_threads`]: one per core).
    pub transport_threads: usize,
    /// Which HTTP/2 server serves the socket.
    pub http2: Http2,
}

/// The HTTP/2 server of the socket (`roost serve --http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Http2 {
    /// Roost's own (`crate::http2`): unary gRPC without the `h2` crate, hyper or tower.
    #[default]
    Roost,
    /// The `h2` crate's (`crate::transport`), behind the `:authority` fix: the server before
    /// Roost's own, kept as a fallback.
    H2,
}

impl Http2 {
    /// The server `ROOST_HTTP2` names (`roost` or `h2`, as `roost serve --http2` reads it),
    /// else the default: for the harness and examples, which start the server in process. Any
    /// other value is an error naming the accepted ones, as `roost serve` refuses it.
    pub fn from_env() -> Result<Http2, String> {
        match std::env::var("ROOST_HTTP2") {
            Ok(value) => Http2::parse(&value),
            Err(std::env::VarError::NotPresent) => Ok(Http2::default()),
            Err(std::env::VarError::NotUnicode(value)) => {
                Err(format!("ROOST_HTTP2={value:?} is not UTF-8"))
            }
        }
    }

    /// `roost` or `h2`, spelled exactly as `roost serve --http2` takes them.
    pub fn parse(value: &str) -> Result<Http2, String> {
        <Http2 as clap::ValueEnum>::from_str(value, false).map_err(|_| {
            format!("ROOST_HTTP2={value:?} names no HTTP/2 server; use `roost` or `h2`")
        })
    }
}

/// One transport thread per available core.
pub fn default_transport_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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
        .set_service_status(
            "dapr.proto.components.v1.StateStore",
            tonic_health::ServingStatus::Serving,
        )
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

    // The Dapr unary methods are answered by the transport itself; these are the rest.
    let services = Services::default()
        .serve(
            proto::admin::admin_server::AdminServer::new(component)
                .max_decoding_message_size(config.max_request_bytes)
                .max_encoding_message_size(usize::MAX),
        )
        .serve(reflection_v1alpha)
        .serve(reflection_v1)
        .serve(health);
    let transport = Arc::new(Transport {
        registry: Arc::clone(&registry),
        services,
        metrics: requests,
        max_request_bytes: config.max_request_bytes,
        http2: config.http2,
    });

    tracing::info!(
        socket = %config.socket_path.display(),
        component = %format!("state.{}", config.name.to_lowercase()),
        data_dir = %config.data_dir.display(),
        socket_mode = %format!("{:o}", config.socket_mode),
        max_request_bytes = config.max_request_bytes,
        metrics = ?config.metrics_addr,
        "roost serving the Dapr state store API"
    );
    let served = serve_connections(
        transport,
        listener,
        config.transport_threads.max(1),
        shutdown,
        config.shutdown_grace,
        || ready(&config),
    )
    .await;
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
    served
}

/// Serves the connections accepted on `listener` on `threads` transport threads, each a
/// current-thread runtime; connections are dealt to them in turn. A connection's HTTP/2
/// task and the tasks of its calls then share one thread: no cross-thread wake-ups or lock
/// contention inside a call, which on two cores beat a work-stealing runtime (BENCHMARKS.md,
/// "Transport threads and mimalloc"). daprd opens one connection per component, so several
/// components or several daprd use several threads.
///
/// `ready` is called once every thread's runtime runs. When `shutdown` resolves, accepting
/// stops and every thread drains its calls; calls still running after `grace` are dropped
/// with their runtime.
async fn serve_connections(
    transport: Arc<Transport>,
    listener: UnixListener,
    threads: usize,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (force_tx, force_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let mut connections = Vec::with_capacity(threads);
    let mut started = Vec::with_capacity(threads);
    for index in 0..threads {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        started.push(started_rx);
        let (conn_tx, conn_rx) =
            tokio::sync::mpsc::unbounded_channel::<std::os::unix::net::UnixStream>();
        connections.push(conn_tx);
        let transport = Arc::clone(&transport);
        let mut stop_rx = stop_rx.clone();
        let mut force_rx = force_rx.clone();
        let done_tx = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("roost-grpc-{index}"))
            .spawn(move || {
                let result =
                    transport_thread(transport, conn_rx, started_tx, &mut stop_rx, &mut force_rx);
                let _ = done_tx.send(result);
            })
            .map_err(|e| ServeError(format!("cannot start a transport thread: {e}")))?;
    }
    drop(done_tx);
    for started in started {
        let running = started
            .await
            .unwrap_or_else(|_| Err("a transport thread stopped".into()));
        if let Err(err) = running {
            let _ = stop_tx.send(true);
            while done_rx.recv().await.is_some() {}
            return Err(ServeError(err));
        }
    }
    ready();

    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0;
    let early = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            done = done_rx.recv() => {
                break Some(match done {
                    Some(Err(err)) => err,
                    _ => "a transport thread stopped".to_string(),
                });
            }
            accepted = listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                Ok(stream) => {
                    let _ = connections[next].send(stream);
                    next = (next + 1) % connections.len();
                }
                // A failed accept (e.g. out of file descriptors) concerns one connection.
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    };
    drop(listener);
    let _ = stop_tx.send(true);
    let mut remaining = threads - usize::from(early.is_some());
    let drained = tokio::time::timeout(grace, async {
        while remaining > 0 && done_rx.recv().await.is_some() {
            remaining -= 1;
        }
    })
    .await;
    if drained.is_err() {
        // In-flight calls get `grace` to finish; a client that keeps its connection busy
        // past that does not keep the process alive.
        tracing::warn!(
            ?grace,
            "calls still in flight after the grace period; closing connections"
        );
        let _ = force_tx.send(true);
        while done_rx.recv().await.is_some() {}
    }
    match early {
        Some(err) => Err(ServeError(format!("the gRPC server failed: {err}"))),
        None => Ok(()),
    }
}

/// One transport thread: reports on `started` once its runtime runs, then serves the
/// connections it is dealt, a task each, until told to stop; then waits for their calls
/// (each connection sends GOAWAY and ends with its last call) unless `force` comes first.
fn transport_thread(
    transport: Arc<Transport>,
    mut connections: tokio::sync::mpsc::UnboundedReceiver<std::os::unix::net::UnixStream>,
    started: tokio::sync::oneshot::Sender<Result<(), String>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    force: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let err = format!("cannot start a transport runtime: {err}");
            let _ = started.send(Err(err.clone()));
            return Err(err);
        }
    };
    let _ = started.send(Ok(()));
    runtime.block_on(async move {
        let mut serving = tokio::task::JoinSet::new();
        let stopping = stop.clone();
        loop {
            tokio::select! {
                accepted = connections.recv() => match accepted {
                    // The streams were accepted on another runtime: register them with this
                    // one. Each connection is behind the `:authority` fix, so grpc-c and
                    // grpc-java clients are served too (`crate::authority`).
                    Some(stream) => match tokio::net::UnixStream::from_std(stream) {
                        Ok(stream) => match transport.http2 {
                            Http2::Roost => {
                                serving.spawn(crate::http2::serve_connection(
                                    Arc::clone(&transport),
                                    stream,
                                    stopping.clone(),
                                ));
                            }
                            Http2::H2 => {
                                serving.spawn(crate::transport::serve_connection(
                                    Arc::clone(&transport),
                                    AuthorityFix::new(stream),
                                    stopping.clone(),
                                ));
                            }
                        },
                        Err(err) => tracing::warn!(error = %err, "cannot serve a connection"),
                    },
                    None => break,
                },
                _ = stop.wait_for(|stop| *stop) => break,
                Some(_) = serving.join_next(), if !serving.is_empty() => {}
            }
        }
        tokio::select! {
            () = async { while serving.join_next().await.is_some() {} } => {}
            _ = force.wait_for(|force| *force) => {}
        }
        Ok(())
    })
}

/// Completes on SIGTERM/SIGINT, or when standard input reaches end of file if `stdin_closes`
/// is set (`--stop-when-stdin-closes`: a supervisor or test that dies takes the server along).
pub async fn shutdown_signal(stdin_closes: bool) {
    if stdin_closes {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.send(());
        });
        tokio::select! {
            () = termination_signal() => {}
            _ = rx => tracing::info!("standard input closed: shutting down"),
        }
    } else {
        termination_signal().await;
    }
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

#[cfg(test)]
mod tests {
    use super::Http2;

    #[test]
    fn the_http2_server_is_named_as_roost_serve_takes_it() {
        assert_eq!(Http2::parse("roost"), Ok(Http2::Roost));
        assert_eq!(Http2::parse("h2"), Ok(Http2::H2));
        for wrong in ["", "H2", "hyper", "roost "] {
            let error = Http2::parse(wrong).expect_err(wrong);
            assert!(
                error.contains(&format!("{wrong:?}")) && error.contains("`roost` or `h2`"),
                "{error}"
            );
        }
    }
}
