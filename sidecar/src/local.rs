//! The whole Dapr state path for tests and benchmarks of Dapr apps (the blackboard's `DaprStore`
//! uses it): `roost serve` on a private socket folder, on its own runtime thread, and in front
//! of it either `roost-sidecar` on loopback ports in the same process ([`LocalDapr::start`]) or
//! a real daprd child process ([`LocalDapr::start_under_daprd`]). The app talks to the sidecar
//! over gRPC/HTTP, the sidecar to a real component over its socket.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::daprd::{DaprdOptions, DaprdProcess};
use crate::{SidecarConfig, in_process_runtime};
use roost_component::server::{self, ServeConfig};

/// A running `roost serve` with `roost-sidecar` or daprd in front; all stop when it is dropped.
pub struct LocalDapr {
    /// `http://127.0.0.1:<port>` of the sidecar's gRPC API.
    pub grpc_endpoint: String,
    /// The sidecar's HTTP API.
    pub http_addr: SocketAddr,
    /// The daprd in front, when there is one (dropped before `roost serve` stops).
    daprd: Option<DaprdProcess>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalDapr {
    /// Starts both under `dir` (socket folder, data dir and resources path are created in it)
    /// with `components_yaml` as the resources (state stores of `type: state.roost`), for app
    /// id `app_id`. Waits (at most 30 s) until the sidecar serves.
    pub fn start(dir: &Path, app_id: &str, components_yaml: &str) -> Result<LocalDapr, String> {
        LocalDapr::launch(dir, app_id, components_yaml, None)
    }

    /// Like [`LocalDapr::start`] with a real daprd (the binary at `daprd`) in front of
    /// `roost serve` instead of `roost-sidecar`; `components_yaml` may then name any of daprd's
    /// own stores too. Waits until daprd has loaded its components.
    pub fn start_under_daprd(
        dir: &Path,
        app_id: &str,
        components_yaml: &str,
        daprd: &Path,
    ) -> Result<LocalDapr, String> {
        LocalDapr::launch(dir, app_id, components_yaml, Some(daprd))
    }

    fn launch(
        dir: &Path,
        app_id: &str,
        components_yaml: &str,
        daprd: Option<&Path>,
    ) -> Result<LocalDapr, String> {
        let sockets = dir.join("sockets");
        let resources = dir.join("resources");
        std::fs::create_dir_all(&resources).map_err(|e| e.to_string())?;
        std::fs::write(resources.join("components.yaml"), components_yaml)
            .map_err(|e| e.to_string())?;
        let daprd_options = daprd.map(|binary| DaprdOptions {
            binary: binary.to_path_buf(),
            app_id: app_id.to_string(),
            resources_path: resources.clone(),
            socket_folder: sockets.clone(),
            work_dir: dir.join("daprd"),
            lifetime_seconds: 3600,
        });
        let serve = ServeConfig {
            socket_path: sockets.join("roost.sock"),
            name: "roost".into(),
            data_dir: dir.join("data"),
            socket_mode: 0o600,
            max_request_bytes: server::DEFAULT_MAX_REQUEST_BYTES,
            shutdown_grace: Duration::from_secs(1),
            metrics_addr: None,
            transport_threads: server::default_transport_threads(),
            http2: roost_component::server::Http2::default(),
        };
        let sidecar = SidecarConfig {
            shutdown_grace: Duration::from_millis(100),
            ..SidecarConfig::on_loopback(app_id, &resources, &sockets)
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let under_daprd = daprd_options.is_some();
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<Option<crate::Ready>, String>>();
        let thread = std::thread::spawn(move || {
            let runtime = match in_process_runtime() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let (serving_tx, serving_rx) = tokio::sync::oneshot::channel();
                let component =
                    tokio::spawn(server::serve(serve, until_stopped(stopped.clone()), |_| {
                        let _ = serving_tx.send(());
                    }));
                if serving_rx.await.is_err() {
                    let why = match component.await {
                        Ok(Err(e)) => e.to_string(),
                        _ => "roost serve stopped".to_string(),
                    };
                    let _ = ready_tx.send(Err(why));
                    return;
                }
                if under_daprd {
                    // daprd is started from outside once the socket serves.
                    let _ = ready_tx.send(Ok(None));
                    let _ = component.await;
                    return;
                }
                let ready = ready_tx.clone();
                let result = crate::run(sidecar, until_stopped(stopped), move |r| {
                    let _ = ready.send(Ok(Some(r.clone())));
                })
                .await;
                if let Err(why) = result {
                    let _ = ready_tx.send(Err(why));
                }
                let _ = component.await;
            });
        });
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "roost-sidecar did not become ready within 30 s".to_string())??;
        let mut local = LocalDapr {
            grpc_endpoint: String::new(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            daprd: None,
            stop: Some(stop),
            thread: Some(thread),
        };
        match (ready, daprd_options) {
            (Some(ready), _) => {
                local.grpc_endpoint = format!("http://{}", ready.grpc_addr);
                local.http_addr = ready.http_addr;
            }
            (None, Some(options)) => {
                let daprd = DaprdProcess::start(&options)?;
                local.grpc_endpoint = daprd.grpc_endpoint();
                local.http_addr = daprd
                    .http_addr
                    .parse()
                    .map_err(|e| format!("daprd's HTTP address: {e}"))?;
                local.daprd = Some(daprd);
            }
            (None, None) => unreachable!("the sidecar reports ready"),
        }
        Ok(local)
    }
}

impl Drop for LocalDapr {
    fn drop(&mut self) {
        drop(self.daprd.take());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
