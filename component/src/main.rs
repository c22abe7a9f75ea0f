//! The `roost` binary: parses arguments, sets up logging, and runs one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use roost_component::server::{
    self, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SHUTDOWN_GRACE, ServeConfig,
};
use roost_component::{admin, doctor, socket};

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
    /// Serve the Dapr state API (gRPC and HTTP) to an app, calling the pluggable components of
    /// a resources path exactly as daprd does: a stand-in for daprd's state building block on
    /// machines without Dapr (no pub/sub, actors, invocation or mTLS).
    Sidecar(SidecarArgs),
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
}

#[derive(clap::Args)]
struct SidecarArgs {
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
    listen_address: std::net::IpAddr,
    /// Namespace, for `keyPrefix: namespace` and the `{namespace}` placeholder.
    #[arg(long, env = "NAMESPACE")]
    namespace: Option<String>,
    /// Socket folder of the pluggable components (same default as `roost serve` and daprd).
    #[arg(long)]
    socket_folder: Option<PathBuf>,
    /// Largest app request body, in bytes (daprd's default: 4 MiB).
    #[arg(long, default_value_t = roost_component::sidecar::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Stop when standard input reaches end of file (for tests and supervisors).
    #[arg(long)]
    stop_when_stdin_closes: bool,
    /// Seconds open app connections may keep the sidecar running after SIGTERM/SIGINT.
    #[arg(long, default_value_t = roost_component::sidecar::DEFAULT_SHUTDOWN_GRACE.as_secs())]
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    roost_component::logging::init(cli.log_format == LogFormat::Json, "info");
    let command = match cli.command {
        Command::Serve(_) | Command::Sidecar(_) | Command::Doctor { .. } => cli.command,
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
            Command::Sidecar(args) => sidecar(args).await,
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

fn open_keyspace(
    keyspace: &Keyspace,
    create: bool,
) -> Result<(roost_engine::Database, PathBuf), String> {
    let data_dir = keyspace.data_dir.clone().unwrap_or_else(default_data_dir);
    let db = admin::open_offline(&data_dir, &keyspace.instance, create)?;
    Ok((db, data_dir))
}

impl OfflineKeyspace {
    fn keyspace(&self) -> Keyspace {
        Keyspace {
            data_dir: self.data_dir.clone(),
            instance: self.instance.clone(),
            socket: None,
        }
    }
}

/// The socket an admin command should use, if it runs online.
fn online_socket(command: &Command) -> Option<(&std::path::Path, &str)> {
    let keyspace = match command {
        Command::Get { keyspace, .. }
        | Command::Set { keyspace, .. }
        | Command::Delete { keyspace, .. }
        | Command::Scan { keyspace, .. }
        | Command::Query { keyspace, .. }
        | Command::Stats { keyspace }
        | Command::Backup { keyspace, .. } => keyspace,
        _ => return None,
    };
    Some((keyspace.socket.as_deref()?, keyspace.instance.as_str()))
}

/// Runs an admin command through a running server's socket.
async fn run_online(
    socket: &std::path::Path,
    instance: &str,
    command: Command,
) -> Result<(), String> {
    use std::io::Write;
    let remote = roost_component::remote::Remote::connect(socket, instance).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| e.to_string();
    match command {
        Command::Get { key, json, .. } => {
            let found = remote
                .get(&key)
                .await?
                .ok_or_else(|| format!("{key:?} not found"))?;
            let etag = found.etag.map(|e| e.value).unwrap_or_default();
            if json {
                let line = serde_json::json!({
                    "key": key,
                    "value": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &found.data),
                    "etag": etag,
                    "contentType": (!found.content_type.is_empty()).then_some(found.content_type),
                    "metadata": found.metadata,
                });
                writeln!(out, "{line}").map_err(io)?;
            } else {
                out.write_all(&found.data).map_err(io)?;
                writeln!(out).map_err(io)?;
                let expiry = found
                    .metadata
                    .get("ttlExpireTime")
                    .map(|t| format!(", expires {t}"))
                    .unwrap_or_default();
                eprintln!("etag {etag}{expiry}");
            }
        }
        Command::Set {
            key,
            value,
            etag,
            ttl,
            content_type,
            ..
        } => {
            let mut metadata = std::collections::HashMap::new();
            if let Some(ttl) = ttl {
                metadata.insert("ttlInSeconds".to_string(), ttl);
            }
            remote
                .set(roost_component::proto::SetRequest {
                    key: key.clone(),
                    value: value.into_bytes().into(),
                    etag: etag.map(|value| roost_component::proto::Etag { value }),
                    metadata,
                    content_type: content_type.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            let etag = remote
                .get(&key)
                .await?
                .and_then(|r| r.etag)
                .map(|e| e.value)
                .unwrap_or_default();
            writeln!(out, "etag {etag}").map_err(io)?;
        }
        Command::Delete { key, etag, .. } => remote.delete(&key, etag).await?,
        Command::Scan { prefix, limit, .. } => {
            let more = remote
                .scan(&prefix, limit, |r| {
                    let line = admin::record_json_parts(
                        &r.key,
                        &r.value,
                        &r.etag,
                        (r.expires_at_unix_ms != 0).then_some(r.expires_at_unix_ms),
                        (!r.content_type.is_empty()).then_some(r.content_type.as_str()),
                    );
                    writeln!(out, "{line}").map_err(io)
                })
                .await?;
            if more {
                eprintln!("(more records follow; raise --limit)");
            }
        }
        Command::Query { query, .. } => {
            let response = remote.query(&query).await?;
            for item in &response.items {
                let line = serde_json::json!({
                    "key": item.key,
                    "value": String::from_utf8_lossy(&item.data),
                    "etag": item.etag.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
                });
                writeln!(out, "{line}").map_err(io)?;
            }
            if !response.token.is_empty() {
                eprintln!("next page token: {}", response.token);
            }
        }
        Command::Stats { .. } => {
            let stats = remote.stats().await?;
            writeln!(out, "{stats:#}").map_err(io)?;
        }
        Command::Backup { out: file, .. } => {
            let mut progress: Option<admin::Progress> = None;
            let (records, bytes) = remote
                .backup(&file, |received, total| {
                    progress
                        .get_or_insert_with(|| admin::Progress::new("backup", "bytes", total))
                        .set(received);
                })
                .await?;
            if let Some(progress) = progress {
                progress.finish(&format!("{records} records, {bytes} bytes"));
            }
            writeln!(
                out,
                "backup {}: {records} records, {bytes} bytes",
                file.display()
            )
            .map_err(io)?;
        }
        _ => unreachable!("only commands with a socket run online"),
    }
    Ok(())
}

fn run_admin(command: Command) -> Result<(), String> {
    use std::io::Write;
    if let Some((socket, instance)) = online_socket(&command) {
        let (socket, instance) = (socket.to_path_buf(), instance.to_string());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        return runtime.block_on(run_online(&socket, &instance, command));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let text = |e: roost_engine::Error| e.to_string();
    let io = |e: std::io::Error| e.to_string();
    match command {
        Command::Get {
            keyspace,
            key,
            json,
        } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let record = db
                .get(&key)
                .map_err(text)?
                .ok_or_else(|| format!("{key:?} not found"))?;
            if json {
                writeln!(out, "{}", admin::record_json(key.as_bytes(), &record)).map_err(io)?;
            } else {
                out.write_all(&record.value).map_err(io)?;
                writeln!(out).map_err(io)?;
                let expiry = record
                    .expire_time_rfc3339()
                    .map(|t| format!(", expires {t}"))
                    .unwrap_or_default();
                eprintln!("etag {}{expiry}", record.etag);
            }
        }
        Command::Set {
            keyspace,
            key,
            value,
            etag,
            ttl,
            content_type,
        } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let mut request = roost_engine::SetRequest::new(key, value.into_bytes());
            request.etag = etag;
            request.ttl_in_seconds = ttl;
            request.content_type = content_type;
            let etag = db.set(request).map_err(text)?;
            writeln!(out, "etag {etag}").map_err(io)?;
        }
        Command::Delete {
            keyspace,
            key,
            etag,
        } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let mut request = roost_engine::DeleteRequest::new(key);
            request.etag = etag;
            db.delete(request).map_err(text)?;
        }
        Command::Scan {
            keyspace,
            prefix,
            limit,
        } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let page = db.scan(prefix, None, limit).map_err(text)?;
            for (key, record) in &page.records {
                writeln!(out, "{}", admin::record_json(key, record)).map_err(io)?;
            }
            if page.next.is_some() {
                eprintln!("(more records follow; raise --limit)");
            }
        }
        Command::Query { keyspace, query } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let query = roost_engine::Query::parse_json(&query).map_err(text)?;
            let page = db.query(&query).map_err(text)?;
            for row in &page.rows {
                let line = serde_json::json!({
                    "key": String::from_utf8_lossy(&row.key),
                    "value": String::from_utf8_lossy(&row.value),
                    "etag": row.etag.to_string(),
                });
                writeln!(out, "{line}").map_err(io)?;
            }
            if let Some(token) = page.token {
                eprintln!("next page token: {token}");
            }
        }
        Command::Stats { keyspace } => {
            let (db, data_dir) = open_keyspace(&keyspace, false)?;
            let stats = admin::stats(&db, &data_dir, &keyspace.instance)?;
            writeln!(out, "{stats:#}").map_err(io)?;
        }
        Command::Export {
            keyspace,
            out: file,
        } => {
            let (db, _) = open_keyspace(&keyspace.keyspace(), false)?;
            match file {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    admin::export(&db, &mut std::io::BufWriter::new(file))?;
                }
                None => {
                    admin::export(&db, &mut out)?;
                }
            }
        }
        Command::Import { keyspace, input } => {
            let (db, _) = open_keyspace(&keyspace.keyspace(), true)?;
            match input {
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    admin::import(&db, &mut std::io::BufReader::new(file))?;
                }
                None => {
                    admin::import(&db, &mut std::io::stdin().lock())?;
                }
            }
        }
        Command::Rekey { keyspace } => {
            let (db, _) = open_keyspace(&keyspace.keyspace(), false)?;
            let progress = admin::Progress::working("rekey");
            let n = db.rewrite_all().map_err(text)?;
            progress.finish(&format!("{n} records"));
            writeln!(out, "rewrote {n} records").map_err(io)?;
        }
        Command::Backup {
            keyspace,
            out: file,
        } => {
            let (db, _) = open_keyspace(&keyspace, false)?;
            let progress = admin::Progress::working("backup");
            let stats = admin::backup_offline(&db, &file)?;
            progress.finish(&format!("{} records", stats.records));
            writeln!(
                out,
                "backup {}: {} records, {} bytes",
                file.display(),
                stats.records,
                stats.bytes
            )
            .map_err(io)?;
        }
        Command::Restore {
            keyspace,
            input,
            force,
        } => {
            let data_dir = keyspace.data_dir.clone().unwrap_or_else(default_data_dir);
            let records = admin::restore(&data_dir, &keyspace.instance, &input, force)?;
            writeln!(
                out,
                "restored {records} records into instance {:?}",
                keyspace.instance
            )
            .map_err(io)?;
        }
        Command::Compact { keyspace } => {
            let data_dir = keyspace.data_dir.clone().unwrap_or_else(default_data_dir);
            let progress = admin::Progress::working("compact");
            let (before, after) = admin::compact(&data_dir, &keyspace.instance)?;
            progress.finish("done");
            writeln!(out, "compacted: {before} bytes → {after} bytes").map_err(io)?;
        }
        Command::Serve(_) | Command::Sidecar(_) | Command::Doctor { .. } => {
            unreachable!("handled by main")
        }
    }
    Ok(())
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
        metrics_addr: args.metrics_addr,
        transport_threads: args
            .transport_threads
            .map_or_else(server::default_transport_threads, usize::from),
    };
    let shutdown = shutdown_signal(args.stop_when_stdin_closes);
    let result = server::serve(config, shutdown, |config| {
        println!(
            "roost ready: state.{} on {} (data dir {})",
            config.name.to_lowercase(),
            config.socket_path.display(),
            config.data_dir.display()
        );
    })
    .await;
    finish("roost", result.map_err(|e| e.to_string()))
}

/// The exit of a long-running command: a log line when it stopped cleanly, the error otherwise.
fn finish(who: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{who}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM/SIGINT, or when standard input closes if `stdin_closes` is set.
async fn shutdown_signal(stdin_closes: bool) {
    if stdin_closes {
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
}

async fn sidecar(args: SidecarArgs) -> ExitCode {
    use roost_component::sidecar::{self, SidecarConfig};
    let config = SidecarConfig {
        app_id: args.app_id,
        namespace: args.namespace.filter(|n| !n.is_empty()),
        resources_paths: args.resources_path,
        socket_folder: socket::socket_folder(args.socket_folder.as_deref()),
        grpc_addr: std::net::SocketAddr::new(args.listen_address, args.grpc_port),
        http_addr: std::net::SocketAddr::new(args.listen_address, args.http_port),
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
    };
    tracing::info!(
        app_id = %config.app_id,
        resources = ?config.resources_paths,
        socket_folder = %config.socket_folder.display(),
        "starting roost sidecar (state building block only)"
    );
    let shutdown = shutdown_signal(args.stop_when_stdin_closes);
    let result = sidecar::run(config, shutdown, |ready| {
        println!(
            "roost sidecar ready: gRPC {} HTTP {} state stores: {}",
            ready.grpc_addr,
            ready.http_addr,
            if ready.stores.is_empty() {
                "none".to_string()
            } else {
                ready.stores.join(", ")
            }
        );
    })
    .await;
    finish("roost sidecar", result)
}
