//! Real daprd as a child process, for tests and benchmarks of Dapr apps: an unmodified daprd
//! (built by `tests/dapr/build.sh`) started with the resources of a folder, in front of the
//! components in a socket folder, and kept to loopback.
//!
//! Loopback only: the Configuration in `tests/dapr/config.yaml` (compiled in; kubernetes name
//! resolution instead of mDNS, whose multicast would leave the machine; metrics off), API and
//! internal gRPC listeners on 127.0.0.1 on ports the kernel just handed out, empty placement
//! and scheduler addresses (sentry is only used with mTLS) and `DAPR_HOST_IP=127.0.0.1` (else
//! daprd probes for a host address with a UDP connect to 192.0.2.1). daprd runs under
//! `timeout`, so it stops by itself even if its parent dies without dropping it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Configuration every daprd the project starts runs with.
pub const LOOPBACK_CONFIG: &str = include_str!("../../tests/dapr/config.yaml");

/// The daprd version `tests/dapr/build.sh` builds.
pub const DAPRD_VERSION: &str = "1.18.1";

/// The daprd to use: `ROOST_DAPRD`, else the one `tests/dapr/build.sh` builds under the
/// workspace's target directory, if it is there.
pub fn find_daprd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROOST_DAPRD") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Some(target.join("dapr/bin/daprd")).filter(|p| p.is_file())
}

/// `N` distinct ports on 127.0.0.1 that were free a moment ago (daprd takes its ports as
/// numbers): the listeners are held until
/// all are picked, so no two of them are the same port.
fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Whether daprd's failure to start was a port someone else took (its log says so).
fn lost_a_port(why: &str) -> bool {
    why.contains("(it exited)")
        && (why.contains("could not listen") || why.contains("address already in use"))
}

/// How to start one daprd.
#[derive(Debug, Clone)]
pub struct DaprdOptions {
    pub binary: PathBuf,
    pub app_id: String,
    pub resources_path: PathBuf,
    /// `DAPR_COMPONENTS_SOCKETS_FOLDER`: where the pluggable components' sockets are.
    pub socket_folder: PathBuf,
    /// A folder for the Configuration file and daprd's log.
    pub work_dir: PathBuf,
    /// Seconds after which daprd is stopped whatever happens.
    pub lifetime_seconds: u32,
}

/// A running daprd; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct DaprdProcess {
    child: Option<Child>,
    /// `127.0.0.1:<port>` of the gRPC API.
    pub grpc_addr: String,
    /// `127.0.0.1:<port>` of the HTTP API.
    pub http_addr: String,
    pub log_path: PathBuf,
}

impl DaprdProcess {
    /// Starts daprd and waits (at most 60 s) until `/v1.0/healthz/outbound` answers 204, that is
    /// until its components are loaded. On failure returns what daprd logged. daprd takes its
    /// ports as numbers, picked free a moment before it starts: when another process took one
    /// in between (daprd exits, unable to listen), it is started again on new ports, up to
    /// three times in all.
    pub fn start(options: &DaprdOptions) -> Result<DaprdProcess, String> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::start_once(options) {
                Err(why) if tries < 3 && lost_a_port(&why) => continue,
                result => return result,
            }
        }
    }

    fn start_once(options: &DaprdOptions) -> Result<DaprdProcess, String> {
        let err = |e: std::io::Error| e.to_string();
        std::fs::create_dir_all(&options.work_dir).map_err(err)?;
        let config = options.work_dir.join("daprd-config.yaml");
        std::fs::write(&config, LOOPBACK_CONFIG).map_err(err)?;
        let log_path = options.work_dir.join("daprd.log");
        let log = std::fs::File::create(&log_path).map_err(err)?;
        let [grpc, http, internal, metrics] = free_ports().map_err(err)?;
        let child = Command::new("timeout")
            .args(["-s", "TERM", "-k", "10"])
            .arg(options.lifetime_seconds.to_string())
            .arg(&options.binary)
            .args(["--app-id", &options.app_id, "--mode", "standalone"])
            .arg("--resources-path")
            .arg(&options.resources_path)
            .arg("--config")
            .arg(&config)
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(["--dapr-grpc-port", &grpc.to_string()])
            .args(["--dapr-http-port", &http.to_string()])
            .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
            .args(["--dapr-internal-grpc-port", &internal.to_string()])
            .args([
                "--enable-metrics=false",
                "--metrics-listen-address",
                "127.0.0.1",
            ])
            .args(["--metrics-port", &metrics.to_string()])
            .args(["--placement-host-address", ""])
            .args(["--scheduler-host-address", ""])
            .args(["--log-level", "info"])
            .env("DAPR_COMPONENTS_SOCKETS_FOLDER", &options.socket_folder)
            .env("DAPR_HOST_IP", "127.0.0.1")
            .env_remove("DAPR_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", options.binary.display()))?;
        let mut daprd = DaprdProcess {
            child: Some(child),
            grpc_addr: format!("127.0.0.1:{grpc}"),
            http_addr: format!("127.0.0.1:{http}"),
            log_path,
        };
        daprd.wait_healthy(Duration::from_secs(60))?;
        Ok(daprd)
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if outbound_healthy(&self.http_addr) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let why = if exited { "it exited" } else { "timed out" };
                return Err(format!(
                    "daprd did not become healthy ({why}):\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// daprd's own process id (the child of the `timeout` that bounds its life).
    pub fn daprd_pid(&self) -> Option<u32> {
        let timeout = self.child.as_ref()?.id();
        let children =
            std::fs::read_to_string(format!("/proc/{timeout}/task/{timeout}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// `http://127.0.0.1:<port>` of the gRPC API, for SDK clients.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// What daprd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then at most 20 s for daprd to exit, then SIGKILL.
    pub fn stop(&mut self) {
        // `timeout` passes SIGTERM on to daprd.
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(20));
        }
    }
}

/// SIGTERM to `child`, at most `grace` for it to exit, then SIGKILL; always reaped.
pub fn terminate(mut child: Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for DaprdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `GET /v1.0/healthz/outbound` on `addr` answers 204.
fn outbound_healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /v1.0/healthz/outbound HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"204"
}
