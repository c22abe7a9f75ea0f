//! `roost doctor`: checks a component socket the way daprd would and says what daprd would
//! register — or exactly why discovery would fail. [`client`] talks to a socket as daprd does
//! (doctor, the online admin commands, the daprd stand-in and the tests use it).

pub mod client;

use crate::proto::{self, state_store_client::StateStoreClient};
use crate::socket::{self, SocketState};
use std::path::Path;
use std::time::Duration;

const STATE_STORE_SERVICE: &str = "dapr.proto.components.v1.StateStore";

/// The outcome of the checks: the report lines, and whether daprd would register the socket.
#[derive(Debug)]
pub struct Diagnosis {
    pub lines: Vec<String>,
    pub ok: bool,
}

pub async fn diagnose(path: &Path) -> Diagnosis {
    let mut lines = Vec::new();
    let fail = |mut lines: Vec<String>, why: String| {
        lines.push(format!("FAIL  {why}"));
        Diagnosis { lines, ok: false }
    };
    lines.push(format!("socket {}", path.display()));
    match socket::inspect(path) {
        SocketState::Live => lines.push("ok    a server accepts connections on the socket".into()),
        SocketState::Missing => {
            return fail(
                lines,
                "no socket file: start `roost serve` before daprd (daprd scans the folder once, at startup)".into(),
            );
        }
        SocketState::Stale => {
            return fail(
                lines,
                "stale socket file: nothing listens on it, and daprd's blocking dial may hang on it; \
                 remove it or start `roost serve` (which removes it)"
                    .into(),
            );
        }
        SocketState::NotASocket => {
            return fail(
                lines,
                "the path exists but is not a socket; daprd skips it".into(),
            );
        }
        SocketState::Unknown(why) => return fail(lines, format!("cannot check the socket: {why}")),
    }
    let channel = match client::connect(path, Duration::from_secs(3)).await {
        Ok(channel) => channel,
        Err(err) => return fail(lines, format!("gRPC connection failed: {err}")),
    };
    let services = match client::list_services_v1alpha(channel.clone()).await {
        Ok(services) => services,
        Err(status) => {
            return fail(
                lines,
                format!(
                    "gRPC reflection v1alpha (grpc.reflection.v1alpha.ServerReflection) failed: {}; \
                     daprd discovers components only through v1alpha, and one failing socket drops \
                     every pluggable component in the folder",
                    status.message()
                ),
            );
        }
    };
    lines.push(format!(
        "ok    reflection v1alpha lists: {}",
        services.join(", ")
    ));
    if !services.iter().any(|s| s == STATE_STORE_SERVICE) {
        return fail(
            lines,
            format!(
                "{STATE_STORE_SERVICE} is not served: daprd would not register a state store here"
            ),
        );
    }
    let mut state = StateStoreClient::new(channel);
    if let Err(status) = state.ping(proto::PingRequest {}).await {
        return fail(lines, format!("Ping failed: {}", status.message()));
    }
    lines.push("ok    Ping".into());
    let features = match state.features(proto::FeaturesRequest {}).await {
        Ok(response) => response.into_inner().features,
        Err(status) => return fail(lines, format!("Features failed: {}", status.message())),
    };
    lines.push(format!("ok    Features: {}", features.join(", ")));
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    lines.push(format!(
        "daprd would register `state.{name}` (use `type: state.{name}` and `version: v1` in the component YAML)"
    ));
    if features.iter().any(|f| f == "ETAG") && features.iter().any(|f| f == "TRANSACTIONAL") {
        lines.push("it can be an actor state store (ETAG + TRANSACTIONAL): set metadata actorStateStore: \"true\"".into());
    }
    Diagnosis { lines, ok: true }
}
