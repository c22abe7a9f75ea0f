//! The `roost` binary: parses arguments, sets up logging, and runs one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use roost_component::admin::{self, commands};
use roost_component::server::{
    self, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SHUTDOWN_GRACE, ServeConfig,
};
use roost_component::{doctor, instances, socket};

// mimalloc instead of glibc's malloc: the gRPC stack allocates and frees per call across
// threads; served calls were 4–21 % faster with it (BENCHMARKS.md, "transport threads").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
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
    /// Print one record (offline on the data dir, or online with --socket).
    Get {
        #[command(flatten)]
        keyspace: Keyspace,
        key: String,
        /// Print the record as JSON (value in base64).
        #[arg(long)]
        json: bool,
    },
    /// Write one record (offline, or online with --socket).
    Set {
        #[command(flatten)]
        keyspace: Keyspace,
        key: String,
        value: String,
        #[arg(long)]
        etag: Option<String>,
        /// ttlInSeconds.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Delete one record (offline, or online with --socket).
    Delete {
        #[command(flatten)]
        keyspace: Keyspace,
        key: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// List records whose key starts with a prefix, as JSON Lines (offline, or online with
    /// --socket).
    Scan {
        #[command(flatten)]
        keyspace: Keyspace,
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most records to list (0 = all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run a state query (`{"filter":...,"sort":...,"page":...}`), rows as JSON Lines (offline,
    /// or online with --socket).
    Query {
        #[command(flatten)]
        keyspace: Keyspace,
        query: String,
    },
    /// Record counts, file size and configuration (no secrets), as JSON (offline, or online
    /// with --socket).
    Stats {
        #[command(flatten)]
        keyspace: Keyspace,
    },
    /// Write every live record as JSON Lines (offline).
    Export {
        #[command(flatten)]
        keyspace: OfflineKeyspace,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read JSON Lines from `export` and write the records exactly, same etags (offline);
    /// creates the instance if it does not exist.
    Import {
        #[command(flatten)]
        keyspace: OfflineKeyspace,
        /// Input file (default: standard input).
        #[arg(long = "in")]
        input: Option<PathBuf>,
    },
    /// Re-encode every record under the current compression and encryption settings, e.g.
    /// after a key rotation (offline; keys from ROOST_ENCRYPTION_KEY /
    /// ROOST_PREVIOUS_ENCRYPTION_KEY).
    Rekey {
        #[command(flatten)]
        keyspace: OfflineKeyspace,
    },
    /// Write a consistent snapshot of the keyspace to a new file: online with --socket while
    /// the server keeps serving, or offline. Values stay compressed and encrypted as stored.
    Backup {
        #[command(flatten)]
        keyspace: Keyspace,
        /// The snapshot file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a snapshot from `roost backup` in place of the keyspace (offline: stop the server
    /// first); creates the instance if it does not exist.
    Restore {
        #[command(flatten)]
        keyspace: OfflineKeyspace,
        /// The snapshot file.
        #[arg(long = "in")]
        input: PathBuf,
        /// Replace an instance that holds records.
        #[arg(long)]
        force: bool,
    },
    /// Rewrite the keyspace into a fresh file, returning free pages to the filesystem
    /// (offline).
    Compact {
        #[command(flatten)]
        keyspace: OfflineKeyspace,
    },
}

/// Which keyspace an admin command works on.
#[derive(clap::Args)]
struct Keyspace {
    /// The data directory of `roost serve` (same default), opened directly (offline).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The component instance (the component YAML's metadata.name).
    #[arg(long)]
    instance: String,
    /// Work online through a running `roost serve` socket (e.g.
    /// /tmp/dapr-components-sockets/roost.sock) instead of opening the data directory.
    #[arg(long, conflicts_with = "data_dir")]
    socket: Option<PathBuf>,
}

/// The keyspace of a command that only works offline.
#[derive(clap::Args)]
struct OfflineKeyspace {
    /// The data directory of `roost serve` (same default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The component instance (the component YAML's metadata.name).
    #[arg(long)]
    instance: String,
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
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Threads serving gRPC connections (each connection lives on one); default: one per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    transport_threads: Option<u16>,
    /// The HTTP/2 server of the socket: `roost` (Roost's own) or `h2` (the h2 crate's).
    #[arg(long, env = "ROOST_HTTP2", value_enum, default_value_t = server::Http2::default())]
    http2: server::Http2,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    roost_component::logging::init(cli.log_format == LogFormat::Json, "info");
    let command = match cli.command {
        Command::Serve(_) | Command::Doctor { .. } => cli.command,
        admin => {
            return match run_admin(admin) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("roost: {message}");
                    ExitCode::FAILURE
                }
            };
        }
    };
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
        match command {
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
            _ => unreachable!("admin commands run before the runtime starts"),
        }
    })
}

impl Keyspace {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(instances::default_data_dir)
    }
}

impl OfflineKeyspace {
    fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(instances::default_data_dir)
    }
}

/// Runs an admin command (offline on the data directory, or online with `--socket`).
fn run_admin(command: Command) -> Result<(), String> {
    let open = |keyspace: &Keyspace| {
        commands::open(
            &keyspace.data_dir(),
            &keyspace.instance,
            keyspace.socket.as_deref(),
        )
    };
    match command {
        Command::Get {
            keyspace,
            key,
            json,
        } => commands::get(&mut *open(&keyspace)?, &key, json),
        Command::Set {
            keyspace,
            key,
            value,
            etag,
            ttl,
            content_type,
        } => commands::set(
            &mut *open(&keyspace)?,
            admin::Write {
                key,
                value: value.into_bytes(),
                etag,
                ttl_in_seconds: ttl,
                content_type,
            },
        ),
        Command::Delete {
            keyspace,
            key,
            etag,
        } => commands::delete(&mut *open(&keyspace)?, &key, etag),
        Command::Scan {
            keyspace,
            prefix,
            limit,
        } => commands::scan(&mut *open(&keyspace)?, &prefix, limit),
        Command::Query { keyspace, query } => commands::query(&mut *open(&keyspace)?, &query),
        Command::Stats { keyspace } => commands::stats(&mut *open(&keyspace)?),
        Command::Backup {
            keyspace,
            out: file,
        } => commands::backup(&mut *open(&keyspace)?, &file),
        Command::Export {
            keyspace,
            out: file,
        } => commands::export(&keyspace.data_dir(), &keyspace.instance, file),
        Command::Import { keyspace, input } => {
            commands::import(&keyspace.data_dir(), &keyspace.instance, input)
        }
        Command::Rekey { keyspace } => commands::rekey(&keyspace.data_dir(), &keyspace.instance),
        Command::Restore {
            keyspace,
            input,
            force,
        } => commands::restore(&keyspace.data_dir(), &keyspace.instance, &input, force),
        Command::Compact { keyspace } => {
            commands::compact(&keyspace.data_dir(), &keyspace.instance)
        }
        Command::Serve(_) | Command::Doctor { .. } => {
            unreachable!("handled by main")
        }
    }
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
        data_dir: args.data_dir.unwrap_or_else(instances::default_data_dir),
        socket_mode: args.socket_mode,
        max_request_bytes: args.max_request_bytes,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
        metrics_addr: args.metrics_addr,
        transport_threads: args
            .transport_threads
            .map_or_else(server::default_transport_threads, usize::from),
        http2: args.http2,
    };
    let shutdown = server::shutdown_signal(args.stop_when_stdin_closes);
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
