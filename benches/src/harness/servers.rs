//! The servers the harness starts and stops itself: `redis-server`, PostgreSQL 15 (initdb +
//! pg_ctl) and `roost serve`, each in its own temporary directory, on a free loopback port or a
//! Unix socket, with pinned settings. Dropping a server stops it.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::HarnessError;

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on loopback, chosen by the kernel (so it never clashes with a system service).
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|e| HarnessError(format!("cannot find a free loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError(format!("cannot read a loopback port: {e}")))?
        .port();
    Ok(port)
}

/// Finds `name` on `PATH` or in `extra` directories.
fn find_binary(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), HarnessError> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > START_TIMEOUT {
            return Err(HarnessError(format!(
                "{what} did not accept connections within {START_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn spawn_error(what: &str, err: std::io::Error) -> HarnessError {
    HarnessError(format!("cannot start {what}: {err}"))
}

/// Redis persistence, pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisPersistence {
    /// `appendonly yes`, `appendfsync always`: every write is fsynced before the reply.
    AofAlways,
    /// `appendonly no`, `save ""`: nothing reaches the disk.
    Off,
}

/// A `redis-server` child process.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl RedisServer {
    /// The server process, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(persistence: RedisPersistence) -> Result<RedisServer, HarnessError> {
        let binary = find_binary("redis-server", &[]).ok_or_else(|| {
            HarnessError(
                "redis-server is not installed: `apt-get install redis-server` (Debian/Ubuntu), \
                 or leave the redis targets out of --targets"
                    .into(),
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-redis")
            .tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--logfile")
            .arg(dir.path().join("redis.log"));
        match persistence {
            RedisPersistence::AofAlways => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
            RedisPersistence::Off => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| spawn_error("redis-server", e))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut server = RedisServer {
            child,
            addr,
            _dir: dir,
        };
        wait_until("redis-server", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                eprintln!("redis-server exited early: {status}");
                return true;
            }
            std::net::TcpStream::connect(addr).is_ok()
        })?;
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(HarnessError(format!(
                "redis-server exited with {status}; see its log in a kept temp dir by re-running"
            )));
        }
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL cluster made with `initdb` and run with `pg_ctl`.
pub struct PostgresServer {
    pg_ctl: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
    pub port: u16,
    pub socket_dir: PathBuf,
    _dir: TempDir,
}

/// PostgreSQL's binaries: `$PG_BIN`, `PATH`, or Debian's `/usr/lib/postgresql/<v>/bin`.
fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    debian.sort();
    debian.reverse();
    find_binary("initdb", &debian).and_then(|p| p.parent().map(Path::to_path_buf))
}

impl PostgresServer {
    /// Starts a fresh cluster with `fsync=on` and `synchronous_commit=on` (the default; the
    /// relaxed target turns it off per session). PostgreSQL refuses to run as root, so as root
    /// the cluster runs as the `postgres` user through `runuser`.
    pub fn start() -> Result<PostgresServer, HarnessError> {
        let bin = postgres_bin_dir().ok_or_else(|| {
            HarnessError(
                "PostgreSQL's initdb was not found: `apt-get install postgresql-15` (or set \
                 PG_BIN to its bin directory), or leave the postgres targets out of --targets"
                    .into(),
            )
        })?;
        let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0)?;
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-pg")
            .tempdir()?;
        if root {
            let uid = user_id("postgres").ok_or_else(|| {
                HarnessError(
                    "running as root, and there is no `postgres` user to run PostgreSQL as".into(),
                )
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid.0), Some(uid.1))?;
        }
        let data = dir.path().join("data");
        let socket_dir = dir.path().to_path_buf();
        let port = free_port()?;
        let run = |program: &Path| {
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let status = run(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| spawn_error("initdb", e))?;
        if !status.status.success() {
            return Err(HarnessError(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            )));
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on \
             -c shared_buffers=256MB -c max_connections=300 -c full_page_writes=on",
            socket_dir.display()
        );
        let pg_ctl = bin.join("pg_ctl");
        let out = run(&pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| spawn_error("pg_ctl", e))?;
        let server = PostgresServer {
            pg_ctl,
            data,
            as_postgres_user: root,
            port,
            socket_dir,
            _dir: dir,
        };
        if !out.status.success() {
            let log =
                std::fs::read_to_string(server.socket_dir.join("postgres.log")).unwrap_or_default();
            return Err(HarnessError(format!(
                "pg_ctl start failed: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(server)
    }

    /// The postmaster (its backends are its children), for the CPU time of the server.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&self.pg_ctl);
            c
        } else {
            Command::new(&self.pg_ctl)
        };
        let _ = command
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The uid and gid of a user, from `/etc/passwd`.
fn user_id(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// `roost serve`, run as a child process of the harness (the harness binary serves it itself
/// with the `serve-roost` subcommand, which calls the same `roost_component::server::serve`
/// as the `roost` binary). It stops when the harness closes its standard input or dies.
/// `exe` names another build's harness binary to serve instead (the `roost-baseline` target).
pub struct RoostServer {
    child: Child,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl RoostServer {
    pub fn start(exe: Option<&Path>) -> Result<RoostServer, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("roost-bench-roost")
            .tempdir()?;
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            None => std::env::current_exe()?,
        };
        let mut child = Command::new(exe)
            .arg("serve-roost")
            .arg("--socket-folder")
            .arg(dir.path())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| spawn_error("roost serve", e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| HarnessError(format!("roost serve did not start: {e}")))?;
        if !line.starts_with("roost ready") {
            let _ = child.kill();
            return Err(HarnessError(format!(
                "roost serve did not start (it printed {line:?})"
            )));
        }
        Ok(RoostServer {
            child,
            socket: dir.path().join("roost.sock"),
            _dir: dir,
        })
    }
}

impl RoostServer {
    /// The server process, for its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The folder holding `roost.sock`: daprd's `DAPR_COMPONENTS_SOCKETS_FOLDER`.
    pub fn socket_folder(&self) -> &Path {
        self.socket.parent().expect("the socket is in a folder")
    }
}

impl Drop for RoostServer {
    fn drop(&mut self) {
        // Closing stdin is the graceful stop; the kill is the fallback.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `serve-roost` subcommand: serves the component on `<socket_folder>/roost.sock` until
/// standard input closes, then prints nothing more and exits.
pub fn serve_roost(socket_folder: &Path, data_dir: &Path) -> Result<(), HarnessError> {
    // Logging set up as `roost serve` does (warnings only unless ROOST_LOG says otherwise).
    roost_component::logging::init(false, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = roost_component::server::ServeConfig {
        socket_path: socket_folder.join("roost.sock"),
        name: "roost".into(),
        data_dir: data_dir.to_path_buf(),
        socket_mode: 0o660,
        max_request_bytes: roost_component::server::DEFAULT_MAX_REQUEST_BYTES,
        shutdown_grace: roost_component::server::DEFAULT_SHUTDOWN_GRACE,
        metrics_addr: None,
        transport_threads: roost_component::server::default_transport_threads(),
        http2: roost_component::server::Http2::from_env().map_err(HarnessError)?,
    };
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = tx.send(());
        });
        let shutdown = async move {
            let _ = rx.await;
        };
        roost_component::server::serve(config, shutdown, |config| {
            println!("roost ready: {}", config.socket_path.display());
        })
        .await
        .map_err(|e| HarnessError(e.to_string()))
    })
}
