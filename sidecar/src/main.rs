//! The `roost-sidecar` binary: parses arguments, sets up logging, and runs the stand-in for
//! daprd's state building block until SIGTERM/SIGINT (or standard input closes).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use roost_component::{logging, server, socket};
use roost_sidecar::SidecarConfig;

/// Serve the Dapr state API (gRPC and HTTP) to an app, calling the pluggable components of a
/// resources path exactly as daprd does: a stand-in for daprd's state building block on
/// machines without Dapr (no pub/sub, actors, invocation or mTLS).
#[derive(Parser)]
#[command(name = "roost-sidecar", version)]
struct Args {
    /// The app id: the default key prefix (`<app id>||<key>`) and the metadata API's id.
    #[arg(long, env = "APP_ID")]
    app_id: String,
    /// Folder (or file) of Dapr resource YAMLs; repeat for several.
    #[arg(long, required = true)]
    resources_path: Vec<PathBuf>,
    /// Port of the gRPC API (0: any free port, printed on the ready line).
    #[arg(long, default_value_t = 50001)]
    grpc_port: u16,
    /// Port of the HTTP API (0: any free port, printed on the ready line).
    #[arg(long, default_value_t = 3500)]
    http_port: u16,
    /// Address both APIs listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen_address: IpAddr,
    /// Namespace, for `keyPrefix: namespace` and the `{namespace}` placeholder.
    #[arg(long, env = "NAMESPACE")]
    namespace: Option<String>,
    /// Socket folder of the pluggable components (same default as `roost serve` and daprd).
    #[arg(long)]
    socket_folder: Option<PathBuf>,
    /// Largest app request body, in bytes (daprd's default: 4 MiB).
    #[arg(long, default_value_t = roost_sidecar::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Stop when standard input reaches end of file (for tests and supervisors).
    #[arg(long)]
    stop_when_stdin_closes: bool,
    /// Seconds open app connections may keep the sidecar running after SIGTERM/SIGINT.
    #[arg(long, default_value_t = roost_sidecar::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_seconds: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format == LogFormat::Json, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roost-sidecar: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let config = SidecarConfig {
        app_id: args.app_id,
        namespace: args.namespace.filter(|n| !n.is_empty()),
        resources_paths: args.resources_path,
        socket_folder: socket::socket_folder(args.socket_folder.as_deref()),
        grpc_addr: SocketAddr::new(args.listen_address, args.grpc_port),
        http_addr: SocketAddr::new(args.listen_address, args.http_port),
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
    };
    tracing::info!(
        app_id = %config.app_id,
        resources = ?config.resources_paths,
        socket_folder = %config.socket_folder.display(),
        "starting roost-sidecar (state building block only)"
    );
    let shutdown = server::shutdown_signal(args.stop_when_stdin_closes);
    let result = runtime.block_on(roost_sidecar::run(config, shutdown, |ready| {
        println!(
            "roost-sidecar ready: gRPC {} HTTP {} state stores: {}",
            ready.grpc_addr,
            ready.http_addr,
            if ready.stores.is_empty() {
                "none".to_string()
            } else {
                ready.stores.join(", ")
            }
        );
    }));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("roost-sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
