//! The app-facing side of Dapr for tests: a real, unmodified daprd (built by
//! `tests/dapr/build.sh`) or `roost-sidecar`, each in front of a `roost serve`, with the same
//! resources folder; and a plain HTTP/1.1 client for the Dapr HTTP API.
//!
//! daprd is started by `roost_sidecar::daprd`, which keeps it to loopback
//! (`tests/dapr/check-loopback.sh` shows the result) and bounds its life.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roost_sidecar::daprd::{DaprdOptions, DaprdProcess};
use roost_sidecar::{InProcess, SidecarConfig};

use super::Server;

/// The longest a daprd started by a test may live.
const DAPRD_LIFETIME_SECONDS: u32 = 900;

/// The repository's root.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The daprd to test against: `ROOST_DAPRD`, else the one `tests/dapr/build.sh` builds under
/// the target directory. `None` (after printing why) when there is none and this is not CI;
/// under `CI=true` a missing daprd fails the test.
pub fn daprd_binary(test: &str) -> Option<PathBuf> {
    if let Some(path) = roost_sidecar::daprd::find_daprd() {
        return Some(path);
    }
    let why = "no daprd (run `bash tests/dapr/build.sh`, or set ROOST_DAPRD)";
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must have daprd: {why}"
    );
    eprintln!("skipped {test}: {why}");
    None
}

/// The Go toolchain, for tests that run Go code. Same rules as [`daprd_binary`].
pub fn go_binary(test: &str) -> Option<PathBuf> {
    let go = PathBuf::from(std::env::var_os("ROOST_GO").unwrap_or_else(|| "go".into()));
    let ok = Command::new(&go)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(go);
    }
    let why = "no Go toolchain (`go` on PATH, or ROOST_GO)";
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must have Go: {why}"
    );
    eprintln!("skipped {test}: {why}");
    None
}

/// Starts the daprd stand-in in this process for `app_id`, on loopback ports the kernel
/// picks, in front of the components in `sockets`.
pub fn start_sidecar(app_id: &str, resources: &Path, sockets: &Path) -> Result<InProcess, String> {
    InProcess::start(SidecarConfig::on_loopback(app_id, resources, sockets))
}

/// Which program serves the app-facing Dapr API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Real daprd.
    Daprd,
    /// The daprd stand-in (`roost-sidecar`), in this process.
    Sidecar,
}

/// A Dapr API front (daprd or `roost-sidecar`) on loopback ports, in front of a `roost serve`
/// whose socket folder it scanned at start. Stops when dropped.
pub struct Front {
    pub kind: Kind,
    pub server: Server,
    pub app_id: String,
    /// `127.0.0.1:port` of the gRPC API.
    pub grpc: String,
    /// `127.0.0.1:port` of the HTTP API.
    pub http: String,
    pub resources: PathBuf,
    sidecar: Option<InProcess>,
    daprd: Option<DaprdProcess>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Front {
    /// Starts `kind` in front of the running `server`, with `yaml` as its only resource file
    /// and `files` (name, contents) written beside the resources folder; `RESOURCES` in `yaml`
    /// is replaced by that folder's path.
    pub fn start_with_files(
        kind: Kind,
        daprd: Option<&Path>,
        server: Server,
        app_id: &str,
        yaml: &str,
        files: &[(&str, String)],
    ) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let resources = dir.path().join("resources");
        std::fs::create_dir(&resources).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        std::fs::write(
            resources.join("components.yaml"),
            yaml.replace("RESOURCES", &resources.display().to_string()),
        )
        .unwrap();
        let mut front = Front {
            kind,
            server,
            app_id: app_id.to_string(),
            grpc: String::new(),
            http: String::new(),
            resources,
            sidecar: None,
            daprd: None,
            log: dir.path().join("front.log"),
            _dir: dir,
        };
        front.spawn(daprd);
        front
    }

    /// (Re)starts the front process on new ports; panics with its log if it does not come up.
    pub fn spawn(&mut self, daprd: Option<&Path>) {
        match self.kind {
            Kind::Daprd => self.spawn_daprd(daprd.expect("a daprd binary")),
            Kind::Sidecar => self.spawn_sidecar(),
        }
    }

    fn spawn_daprd(&mut self, binary: &Path) {
        let options = DaprdOptions {
            binary: binary.to_path_buf(),
            app_id: self.app_id.clone(),
            resources_path: self.resources.clone(),
            socket_folder: self.server.socket_folder(),
            work_dir: self.log.parent().unwrap().join("daprd"),
            lifetime_seconds: DAPRD_LIFETIME_SECONDS,
        };
        let daprd = DaprdProcess::start(&options).unwrap_or_else(|e| panic!("{e}"));
        self.grpc = daprd.grpc_addr.clone();
        self.http = daprd.http_addr.clone();
        self.daprd = Some(daprd);
    }

    fn spawn_sidecar(&mut self) {
        let sidecar = start_sidecar(&self.app_id, &self.resources, &self.server.socket_folder())
            .unwrap_or_else(|e| panic!("the sidecar did not start: {e}"));
        self.grpc = sidecar.ready.grpc_addr.to_string();
        self.http = sidecar.ready.http_addr.to_string();
        self.sidecar = Some(sidecar);
        self.wait_healthy();
    }

    /// Waits (at most 60 s) until `/v1.0/healthz/outbound` answers 204: components loaded.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if !self.http.is_empty()
                && let Ok((204, _, _)) =
                    try_http(&self.http, "GET", "/v1.0/healthz/outbound", &[], "")
            {
                return;
            }
            let exited = self.sidecar.as_ref().is_some_and(|s| !s.is_running());
            if exited || Instant::now() > deadline {
                panic!(
                    "{:?} did not become healthy ({}):\n{}",
                    self.kind,
                    if exited { "it exited" } else { "60 s" },
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the front process logged so far.
    pub fn log(&self) -> String {
        match &self.daprd {
            Some(daprd) => daprd.log(),
            None => std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }

    /// Stops the front process (SIGTERM, then at most 20 s) and keeps `roost serve` running.
    pub fn stop(&mut self) {
        if let Some(mut daprd) = self.daprd.take() {
            daprd.stop();
        }
        self.sidecar = None;
    }

    /// `http://127.0.0.1:port` of the gRPC API, for SDK clients.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn grpc_port(&self) -> &str {
        self.grpc.rsplit(':').next().unwrap()
    }

    pub fn http_port(&self) -> &str {
        self.http.rsplit(':').next().unwrap()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request; returns status, headers (lowercased names) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, HashMap<String, String>, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other(format!(
            "no HTTP response: {response:?}"
        )));
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, headers, body))
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The `errorCode` of a Dapr error body.
pub fn error_code(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["errorCode"].as_str().unwrap_or_default().to_string()
}

/// A Go tool that `tests/dapr/tools.sh` builds into `target/tools/` (`h2spec`, `grpcurl`), or
/// the path in `env`. Same rules as [`daprd_binary`]: missing outside CI skips, under CI fails.
pub fn go_tool(name: &str, env: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repository_root().join("target"))
            .join("tools")
            .join(name)
    });
    if path.is_file() {
        return Some(path);
    }
    let why = format!("no {name} (run `bash tests/dapr/tools.sh`, or set {env})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must have {name}: {why}"
    );
    eprintln!("skipped {test}: {why}");
    None
}
