//! The sidecar's side of the pluggable-component protocol, as daprd does it (pluggable spec
//! §2): list the socket folder once, ask each socket through reflection v1alpha which services
//! it serves, then per component YAML dial its own connection and call `Init` (with the YAML
//! metadata and `x-component-instance: <metadata.name>`) and `Features` once. Errors coming
//! back from the component are decoded the way daprd decodes them (§3.1–3.3).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::keys::KeyPrefix;
use crate::resources::StateComponentSpec;
use roost_component::doctor::client;
use roost_component::proto::{
    self, queriable_state_store_client::QueriableStateStoreClient,
    state_store_client::StateStoreClient,
    transactional_state_store_client::TransactionalStateStoreClient,
    transactional_store_multi_max_size_client::TransactionalStoreMultiMaxSizeClient,
};

const STATE_STORE_SERVICE: &str = "dapr.proto.components.v1.StateStore";
/// daprd's fixed timeout for the `MultiMaxSize` call.
const MULTI_MAX_SIZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long discovery waits for one socket (daprd's dial has no timeout and may hang on a stale
/// socket; the sidecar says so instead).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The state stores found in the socket folder: lowercased `state.<name>` → socket path.
pub type Discovered = BTreeMap<String, PathBuf>;

/// Lists `folder` once, as daprd does at startup. A socket that cannot be dialled or listed
/// fails discovery of the whole folder (daprd then registers no pluggable component at all);
/// the error names the socket.
pub async fn discover(folder: &Path) -> Result<Discovered, String> {
    let mut found = Discovered::new();
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(format!("cannot list {}: {e}", folder.display())),
    };
    let mut sockets = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            continue;
        }
        if !std::os::unix::fs::FileTypeExt::is_socket(&file_type) {
            tracing::warn!(path = %path.display(), "not a socket: skipped");
            continue;
        }
        sockets.push(path);
    }
    sockets.sort();
    for path in sockets {
        let name = match path.file_stem() {
            Some(stem) => stem.to_string_lossy().to_lowercase(),
            None => continue,
        };
        let services = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
            let channel = client::connect(&path, DISCOVERY_TIMEOUT)
                .await
                .map_err(|e| format!("dial failed: {e}"))?;
            client::list_services_v1alpha(channel)
                .await
                .map_err(|s| format!("reflection v1alpha failed: {}", s.message()))
        })
        .await
        .map_err(|_| "no answer within 5 s".to_string())
        .and_then(|r| r)
        .map_err(|why| {
            format!(
                "pluggable component discovery failed on {} ({why}); like daprd, no pluggable \
                 component of the folder is registered — remove the stale socket or start its server",
                path.display()
            )
        })?;
        if services.iter().any(|s| s == STATE_STORE_SERVICE) {
            found.insert(format!("state.{name}"), path);
        } else {
            tracing::info!(socket = %path.display(), ?services, "serves no state store: ignored");
        }
    }
    Ok(found)
}

/// One state store component instance, initialised.
pub struct StateComponent {
    pub name: String,
    pub component_type: String,
    pub version: String,
    pub features: Vec<String>,
    pub key_prefix: KeyPrefix,
    channel: Channel,
    multi_max_size: OnceCell<i64>,
}

impl std::fmt::Debug for StateComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateComponent")
            .field("name", &self.name)
            .field("type", &self.component_type)
            .field("features", &self.features)
            .finish()
    }
}

/// A component error, decoded as daprd decodes it.
#[derive(Debug)]
pub enum ComponentError {
    /// `FAILED_PRECONDITION` with the BadRequest/etag detail.
    EtagMismatch(String),
    /// `INVALID_ARGUMENT` with the BadRequest/etag detail.
    EtagInvalid(String),
    /// A kit error: the component chose the gRPC code, HTTP code and tag.
    Kit {
        code: Code,
        http_code: u16,
        tag: String,
        message: String,
    },
    /// Anything else, passed on as the raw status.
    Other(Status),
}

impl ComponentError {
    /// Kit error first, then the ETag converters (daprd's order for Set/Delete/BulkSet/BulkDelete).
    pub fn decode(status: Status, etag_aware: bool) -> ComponentError {
        let details = status.get_error_details_vec();
        if let [tonic_types::ErrorDetail::ErrorInfo(info)] = details.as_slice()
            && info.metadata.get("kit_error").map(String::as_str) == Some("true")
            && let (Some(http), Some(tag)) = (
                info.metadata
                    .get("http_code")
                    .and_then(|c| c.parse::<u16>().ok()),
                info.metadata.get("tag"),
            )
        {
            return ComponentError::Kit {
                code: status.code(),
                http_code: http,
                tag: tag.clone(),
                message: status.message().to_string(),
            };
        }
        if etag_aware
            && let [tonic_types::ErrorDetail::BadRequest(bad)] = details.as_slice()
            && let [violation] = bad.field_violations.as_slice()
            && violation.field == "etag"
        {
            match status.code() {
                Code::FailedPrecondition => {
                    return ComponentError::EtagMismatch(violation.description.clone());
                }
                Code::InvalidArgument => {
                    return ComponentError::EtagInvalid(violation.description.clone());
                }
                _ => {}
            }
        }
        ComponentError::Other(status)
    }

    /// The text daprd puts after its own prefix.
    pub fn text(&self) -> String {
        match self {
            ComponentError::EtagMismatch(d) => {
                format!("possible etag mismatch. error from state store: {d}")
            }
            ComponentError::EtagInvalid(d) => format!("invalid etag value: {d}"),
            ComponentError::Kit { code, message, .. } => {
                format!("api error: code = {code:?} desc = {message}")
            }
            ComponentError::Other(status) => format!(
                "rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            ),
        }
    }
}

impl StateComponent {
    /// Dials the component's own connection and runs `Init` then `Features`, all within the
    /// YAML's `initTimeout`.
    pub async fn init(
        spec: &StateComponentSpec,
        socket: &Path,
        key_prefix: KeyPrefix,
    ) -> Result<StateComponent, String> {
        let started = async {
            let channel = client::connect(socket, spec.init_timeout)
                .await
                .map_err(|e| format!("dial {}: {e}", socket.display()))?;
            let mut store = StateStoreClient::new(channel.clone());
            let properties: HashMap<String, String> = spec
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            store
                .init(client::for_instance(
                    &spec.name,
                    proto::InitRequest {
                        metadata: Some(proto::MetadataRequest { properties }),
                    },
                ))
                .await
                .map_err(|s| format!("Init failed: {}", s.message()))?;
            let features = store
                .features(client::for_instance(&spec.name, proto::FeaturesRequest {}))
                .await
                .map_err(|s| format!("Features failed: {}", s.message()))?
                .into_inner()
                .features;
            Ok::<_, String>((channel, features))
        };
        let (channel, features) = tokio::time::timeout(spec.init_timeout, started)
            .await
            .map_err(|_| format!("init timeout after {:?}", spec.init_timeout))??;
        Ok(StateComponent {
            name: spec.name.clone(),
            component_type: spec.component_type.clone(),
            version: spec.version.clone(),
            features,
            key_prefix,
            channel,
            multi_max_size: OnceCell::new(),
        })
    }

    /// A component with the given features whose connection is never opened: for tests of
    /// the checks made before a component is called.
    #[cfg(test)]
    pub(crate) fn unconnected(name: &str, features: &[&str]) -> StateComponent {
        let channel = tonic::transport::Endpoint::from_static("http://[::1]:1").connect_lazy();
        StateComponent {
            name: name.to_string(),
            component_type: "state.test".to_string(),
            version: "v1".to_string(),
            features: features.iter().map(|f| f.to_string()).collect(),
            key_prefix: KeyPrefix::resolve(&Default::default(), name, "app", None)
                .expect("default prefix"),
            channel,
            multi_max_size: OnceCell::new(),
        }
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The capabilities the metadata API shows: the features, plus `ACTOR` when the store has
    /// both `ETAG` and `TRANSACTIONAL` (daprd derives it; components never send it).
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = self.features.clone();
        if self.has_feature("ETAG") && self.has_feature("TRANSACTIONAL") {
            caps.push("ACTOR".to_string());
        }
        caps
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        client::for_instance(&self.name, message)
    }

    pub async fn get(&self, request: proto::GetRequest) -> Result<proto::GetResponse, Status> {
        StateStoreClient::new(self.channel.clone())
            .get(self.request(request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn bulk_get(
        &self,
        request: proto::BulkGetRequest,
    ) -> Result<proto::BulkGetResponse, Status> {
        StateStoreClient::new(self.channel.clone())
            .bulk_get(self.request(request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn set(&self, request: proto::SetRequest) -> Result<(), Status> {
        StateStoreClient::new(self.channel.clone())
            .set(self.request(request))
            .await
            .map(|_| ())
    }

    pub async fn bulk_set(&self, request: proto::BulkSetRequest) -> Result<(), Status> {
        StateStoreClient::new(self.channel.clone())
            .bulk_set(self.request(request))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, request: proto::DeleteRequest) -> Result<(), Status> {
        StateStoreClient::new(self.channel.clone())
            .delete(self.request(request))
            .await
            .map(|_| ())
    }

    pub async fn bulk_delete(&self, request: proto::BulkDeleteRequest) -> Result<(), Status> {
        StateStoreClient::new(self.channel.clone())
            .bulk_delete(self.request(request))
            .await
            .map(|_| ())
    }

    pub async fn transact(&self, request: proto::TransactionalStateRequest) -> Result<(), Status> {
        TransactionalStateStoreClient::new(self.channel.clone())
            .transact(self.request(request))
            .await
            .map(|_| ())
    }

    pub async fn query(
        &self,
        request: proto::QueryRequest,
    ) -> Result<proto::QueryResponse, Status> {
        QueriableStateStoreClient::new(self.channel.clone())
            .query(self.request(request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The component's transaction size limit, asked once (5 s timeout) and cached; an error
    /// means "no limit", as in daprd (which logs it).
    pub async fn multi_max_size(&self) -> i64 {
        *self
            .multi_max_size
            .get_or_init(|| async {
                let mut client = TransactionalStoreMultiMaxSizeClient::new(self.channel.clone());
                let call = client.multi_max_size(self.request(proto::MultiMaxSizeRequest {}));
                match tokio::time::timeout(MULTI_MAX_SIZE_TIMEOUT, call).await {
                    Ok(Ok(response)) => response.into_inner().max_size,
                    Ok(Err(status)) => {
                        tracing::error!(store = %self.name, error = %status.message(), "failed to get multi max size from state store");
                        -1
                    }
                    Err(_) => {
                        tracing::error!(store = %self.name, "failed to get multi max size from state store: timeout");
                        -1
                    }
                }
            })
            .await
    }
}
