//! The `roost` binary: parses arguments, sets up logging, and runs one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use roost_component::server::{
    self, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SHUTDOWN_GRACE, ServeConfig,
};
use roost_component::{doctor, socket};

#[derive(Parser)]
#[command(
    name = "roost",
    version,
    about = "Roost: an embedded state store served to Dapr as a pluggable component"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Dapr state store API on `<socket folder>/<name>.sock`.
    Serve(ServeArgs),
    /// Check a component socket the way daprd discovers it.
    Doctor {
        /// The socket to check (default: `<socket folder>/roost.sock`).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Socket folder; default from DAPR_COMPONENTS_SOCKETS_FOLDER, DAPR_COMPONENT_SOCKETS_FOLDER,
    /// DAPR_COMPONENT_SOCKET_FOLDER, else /tmp/dapr-components-sockets.
    #[arg(long)]
    socket_folder: Option<PathBuf>,
    /// Component name: the socket is `<name>.sock` and daprd registers `state.<name>`.
    #[arg(long, default_value = "roost")]
    name: String,
    /// Where keyspaces are stored; default $ROOST_DATA_DIR, else $XDG_DATA_HOME/roost, else
    /// ~/.local/share/roost.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Permission bits of the socket file, octal. 660 lets the owner and group connect; use 666
    /// when daprd runs as another user without a shared group (Kubernetes sidecars).
    #[arg(long, default_value = "660", value_parser = socket::parse_mode)]
    socket_mode: u32,
    /// Largest request message accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Shut down (gracefully) when standard input reaches end of file — for supervisors and
    /// tests that start `roost serve` with a pipe: if they die, the server stops by itself.
    #[arg(long)]
    stop_when_stdin_closes: bool,
    /// Seconds in-flight calls may run after SIGTERM/SIGINT before connections are closed.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace_seconds: u64,
}

fn default_data_dir() -> PathBuf {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("ROOST_DATA_DIR")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("roost")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/roost")))
        .unwrap_or_else(|| PathBuf::from("roost-data"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("roost: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Doctor { socket } => {
                let path = socket.unwrap_or_else(|| socket::socket_folder(None).join("roost.sock"));
                let diagnosis = doctor::diagnose(&path).await;
                for line in &diagnosis.lines {
                    println!("{line}");
                }
                if diagnosis.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    if args.name.is_empty() || args.name.contains('/') {
        eprintln!("roost: --name must be a non-empty file name without '/'");
        return ExitCode::FAILURE;
    }
    let folder = socket::socket_folder(args.socket_folder.as_deref());
    let config = ServeConfig {
        socket_path: folder.join(format!("{}.sock", args.name)),
        name: args.name,
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        socket_mode: args.socket_mode,
        max_request_bytes: args.max_request_bytes,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
    };
    let stdin_closed = args.stop_when_stdin_closes;
    let shutdown = async move {
        if stdin_closed {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                let _ = tx.send(());
            });
            tokio::select! {
                () = server::termination_signal() => {}
                _ = rx => tracing::info!("standard input closed: shutting down"),
            }
        } else {
            server::termination_signal().await;
        }
    };
    let result = server::serve(config, shutdown, |config| {
        println!(
            "roost ready: state.{} on {} (data dir {})",
            config.name.to_lowercase(),
            config.socket_path.display(),
            config.data_dir.display()
        );
    })
    .await;
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("roost: {err}");
            ExitCode::FAILURE
        }
    }
}
