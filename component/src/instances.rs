//! One keyspace per `x-component-instance`: the [`InstanceRegistry`].
//!
//! daprd sends the component YAML's `metadata.name` in the `x-component-instance` header of
//! every call (a missing or empty header maps to [`DEFAULT_INSTANCE`], the Go SDK's default id). `Init`
//! configures an instance: it opens `<data dir>/instances/<encoded name>/data.roost` and writes
//! the effective, non-secret configuration to `instance.json` beside it. Re-`Init` with the same
//! configuration is a no-op; with a different one the keyspace is reopened with it.
//!
//! After a component restart daprd does not send `Init` again, so a call for an instance not
//! yet open in this process reopens it from `instance.json`; an instance never initialised
//! gets `FAILED_PRECONDITION`.
//!
//! Instance names are untrusted: they are validated (1–253 bytes, no control characters) and
//! encoded into a directory name that can never contain `/` or be `.`/`..`, so no name can
//! reach outside the data directory or collide with another.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use roost_engine::{AsyncDatabase, Database};
use serde::{Deserialize, Serialize};

use crate::config::{InstanceConfig, InstanceSecrets};

/// Why an instance could not be named, found, configured or opened. `crate::status` turns it
/// into the gRPC status daprd sees (`From<InstanceError> for tonic::Status`).
#[derive(Debug)]
pub enum InstanceError {
    /// The caller's mistake: a bad name or header, a configuration this server cannot serve.
    Invalid(String),
    /// The instance cannot serve until daprd's `Init`: never initialised, or encrypted.
    NeedsInit(String),
    /// The keyspace's encryption key is missing or wrong for its records (at `Init`).
    Key(String),
    /// The engine refused (closing a keyspace to reconfigure it).
    Engine(roost_engine::Error),
    /// Anything else on the server's side: unreadable saved configuration, I/O.
    Internal(String),
}

impl InstanceError {
    /// The message, as the caller sees it.
    pub fn message(&self) -> String {
        match self {
            InstanceError::Invalid(m)
            | InstanceError::NeedsInit(m)
            | InstanceError::Key(m)
            | InstanceError::Internal(m) => m.clone(),
            InstanceError::Engine(e) => e.to_string(),
        }
    }
}

impl std::fmt::Display for InstanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for InstanceError {}

/// The header daprd uses to name the component instance of a call.
pub const INSTANCE_HEADER: &str = "x-component-instance";
/// The instance used when a call has no `x-component-instance` header.
pub const DEFAULT_INSTANCE: &str = "#default__instance#";
/// The longest accepted instance name (a Kubernetes object name's limit).
pub const MAX_INSTANCE_NAME_BYTES: usize = 253;
pub(crate) const CONFIG_FILE: &str = "instance.json";
pub(crate) const DATA_FILE: &str = "data.roost";

/// Where keyspaces are stored unless `--data-dir` says otherwise: `$ROOST_DATA_DIR`, else
/// `$XDG_DATA_HOME/roost`, else `~/.local/share/roost` (`roost-data` without a home).
pub fn default_data_dir() -> PathBuf {
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

/// An open instance: its name, configuration and keyspace.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    pub config: InstanceConfig,
    pub db: AsyncDatabase,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PersistedInstance {
    pub name: String,
    pub config: InstanceConfig,
}

/// All instances this process serves.
#[derive(Debug)]
pub struct InstanceRegistry {
    data_dir: PathBuf,
    open: RwLock<HashMap<String, Arc<Instance>>>,
    /// Serialises opening, reinitialising and closing.
    lifecycle: tokio::sync::Mutex<()>,
    /// The largest request message the server accepts: a value limit above it could never be
    /// reached, so `Init` refuses one.
    max_request_bytes: usize,
}

/// Room in a request for everything but the value (key, etag, metadata, framing).
const REQUEST_OVERHEAD_BYTES: usize = 64 * 1024;

impl InstanceRegistry {
    /// A registry keeping its instances under `data_dir` (created, mode 0700, if missing).
    pub fn new(
        data_dir: impl Into<PathBuf>,
        max_request_bytes: usize,
    ) -> std::io::Result<InstanceRegistry> {
        let data_dir = data_dir.into();
        create_private_dir(&data_dir.join("instances"))?;
        Ok(InstanceRegistry {
            data_dir,
            open: RwLock::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            max_request_bytes,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The instance name of a call: its `x-component-instance` header, or the default when
    /// the header is missing or empty. daprd's pluggable client always sends the header, with
    /// an empty value when its component has no name (Dapr's conformance suite does that).
    pub fn instance_name<T>(request: &tonic::Request<T>) -> Result<String, InstanceError> {
        Self::named(request).map(str::to_string)
    }

    /// [`Self::instance_name`], borrowed from the request, not validated: an open instance's
    /// name is valid, and [`Self::get`] validates any other.
    fn named<T>(request: &tonic::Request<T>) -> Result<&str, InstanceError> {
        static HEADER: std::sync::LazyLock<tonic::metadata::MetadataKey<tonic::metadata::Ascii>> =
            std::sync::LazyLock::new(|| tonic::metadata::MetadataKey::from_static(INSTANCE_HEADER));
        match request.metadata().get(&*HEADER) {
            None => Ok(DEFAULT_INSTANCE),
            Some(value) if value.is_empty() => Ok(DEFAULT_INSTANCE),
            Some(value) => value.to_str().map_err(|_| {
                InstanceError::Invalid(format!("the {INSTANCE_HEADER} header is not ASCII text"))
            }),
        }
    }

    /// Where an instance's files live.
    pub fn instance_dir(&self, name: &str) -> Result<PathBuf, InstanceError> {
        validate_name(name)?;
        Ok(self.data_dir.join("instances").join(encode_name(name)))
    }

    /// Configures (or reconfigures) an instance and opens its keyspace.
    pub async fn init(
        &self,
        name: &str,
        config: InstanceConfig,
        secrets: InstanceSecrets,
    ) -> Result<Arc<Instance>, InstanceError> {
        let dir = self.instance_dir(name)?;
        let largest = self
            .max_request_bytes
            .saturating_sub(REQUEST_OVERHEAD_BYTES);
        if config.max_value_size > largest {
            return Err(InstanceError::Invalid(format!(
                "Init of instance {name:?}: maxValueSize {} is above the largest value a request can carry \
                 ({largest} bytes with roost serve --max-request-bytes {}); lower it or raise --max-request-bytes",
                config.max_value_size, self.max_request_bytes
            )));
        }
        let _guard = self.lifecycle.lock().await;
        let existing = self.lookup(name);
        if let Some(existing) = &existing
            && existing.config == config
        {
            return Ok(Arc::clone(existing));
        }
        if let Some(existing) = existing {
            tracing::info!(
                instance = name,
                "re-Init with a new configuration; reopening the keyspace"
            );
            self.open
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            existing.db.close().await.map_err(InstanceError::Engine)?;
        }
        let instance =
            open_instance(name.to_string(), dir.clone(), config.clone(), &secrets).await?;
        let persisted = PersistedInstance {
            name: name.to_string(),
            config,
        };
        let dir_for_write = dir.clone();
        tokio::task::spawn_blocking(move || write_config(&dir_for_write, &persisted))
            .await
            .map_err(|e| {
                InstanceError::Internal(format!("saving the instance configuration failed: {e}"))
            })?
            .map_err(|e| {
                InstanceError::Internal(format!("saving the instance configuration failed: {e}"))
            })?;
        let instance = Arc::new(instance);
        self.open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&instance));
        tracing::info!(instance = name, config = ?instance.config, "instance initialised");
        Ok(instance)
    }

    /// The open instance named by the call, reopening it from its saved configuration after a
    /// restart; [`InstanceError::NeedsInit`] if it was never initialised.
    pub async fn resolve<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Arc<Instance>, InstanceError> {
        let name = Self::named(request)?;
        match self.lookup(name) {
            Some(instance) => Ok(instance),
            // Opening a known instance is rare and its future is large: boxed, it does not
            // make every call's future larger.
            None => Box::pin(self.get(name)).await,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Arc<Instance>, InstanceError> {
        let dir = self.instance_dir(name)?;
        if let Some(instance) = self.lookup(name) {
            return Ok(instance);
        }
        let _guard = self.lifecycle.lock().await;
        if let Some(instance) = self.lookup(name) {
            return Ok(instance);
        }
        let config_path = dir.join(CONFIG_FILE);
        let saved = match tokio::fs::read(&config_path).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(InstanceError::NeedsInit(format!(
                    "component instance {name:?} was never initialised: daprd sends Init when it loads the \
                     component YAML named {name:?}; check the YAML's metadata.name and restart daprd"
                )));
            }
            Err(err) => {
                return Err(InstanceError::Internal(format!(
                    "cannot read the saved configuration of instance {name:?}: {err}"
                )));
            }
        };
        let persisted: PersistedInstance = serde_json::from_slice(&saved).map_err(|err| {
            InstanceError::Internal(format!(
                "the saved configuration of instance {name:?} is unreadable: {err}"
            ))
        })?;
        if persisted.name != name {
            return Err(InstanceError::Internal(format!(
                "the saved configuration for instance {name:?} names {:?}",
                persisted.name
            )));
        }
        if persisted.config.encryption_key_id.is_some() {
            return Err(InstanceError::NeedsInit(format!(
                "component instance {name:?} is encrypted and its key is not stored on disk: after a component \
                 restart it needs daprd's Init again (restart daprd, or reload the component YAML)"
            )));
        }
        let instance = Arc::new(
            open_instance(
                name.to_string(),
                dir,
                persisted.config,
                &InstanceSecrets::default(),
            )
            .await?,
        );
        tracing::info!(
            instance = name,
            "instance reopened from its saved configuration (no Init since restart)"
        );
        self.open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&instance));
        Ok(instance)
    }

    fn lookup(&self, name: &str) -> Option<Arc<Instance>> {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names of the instances open now.
    pub fn open_instances(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Flushes and closes every open keyspace (at shutdown).
    pub async fn close_all(&self) {
        let _guard = self.lifecycle.lock().await;
        let instances: Vec<Arc<Instance>> = self
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, instance)| instance)
            .collect();
        for instance in instances {
            if let Err(err) = instance.db.close().await {
                tracing::error!(instance = %instance.name, error = %err, "closing the keyspace failed");
            }
        }
    }
}

async fn open_instance(
    name: String,
    dir: PathBuf,
    config: InstanceConfig,
    secrets: &InstanceSecrets,
) -> Result<Instance, InstanceError> {
    let options = config.engine_options(&dir.join(DATA_FILE), secrets);
    let opened = tokio::task::spawn_blocking(move || {
        create_private_dir(&dir).map_err(|e| {
            roost_engine::Error::Storage(format!("cannot create the instance directory: {e}"))
        })?;
        Database::open(options)
    })
    .await
    .map_err(|e| InstanceError::Internal(format!("opening the keyspace failed: {e}")))?;
    let db = opened.map_err(|e| match e {
        // A missing or wrong key is a configuration mistake: tell the app's operator plainly.
        roost_engine::Error::EncryptionKey(_) => InstanceError::Key(format!(
            "opening the keyspace of instance {name:?} failed: {e}"
        )),
        other => InstanceError::Internal(format!(
            "opening the keyspace of instance {name:?} failed: {other}"
        )),
    })?;
    Ok(Instance {
        name,
        config,
        db: db.into_async(),
    })
}

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `instance.json` atomically (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn write_config(dir: &Path, persisted: &PersistedInstance) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(persisted).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(CONFIG_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn validate_name(name: &str) -> Result<(), InstanceError> {
    if name.is_empty() {
        return Err(InstanceError::Invalid(
            "the component instance name is empty".into(),
        ));
    }
    if name.len() > MAX_INSTANCE_NAME_BYTES {
        return Err(InstanceError::Invalid(format!(
            "the component instance name is {} bytes long; the limit is {MAX_INSTANCE_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(InstanceError::Invalid(
            "the component instance name contains control characters".into(),
        ));
    }
    Ok(())
}

/// Encodes an instance name as a directory name: `[a-z0-9_-]` kept, every other byte as
/// `%XX`; a result over 200 characters becomes its first 100 characters, `~`, and a 128-bit
/// FNV-1a hash of the whole name. The result never contains `/`, is never `.` or `..`, and
/// distinct names give distinct results (short ones by construction, long ones barring a hash
/// collision).
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    if out.len() > 200 {
        let prefix: String = out.chars().take(100).collect();
        out = format!("{prefix}~{:032x}", fnv1a_128(name.as_bytes()));
    }
    out
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(OFFSET, |hash, b| {
        (hash ^ u128::from(*b)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_names_stay_inside_and_do_not_collide() {
        let names = [
            "statestore",
            "StateStore",
            "../x",
            "..",
            ".",
            "a/b",
            "a%2Fb",
            "#default__instance#",
            "orders-store",
            "orders.store",
        ];
        let encoded: Vec<String> = names.iter().map(|n| encode_name(n)).collect();
        for e in &encoded {
            assert!(
                !e.contains('/') && e != "." && e != ".." && !e.is_empty(),
                "{e}"
            );
            assert!(e.len() <= 200);
        }
        let unique: std::collections::HashSet<&String> = encoded.iter().collect();
        assert_eq!(unique.len(), names.len(), "{encoded:?}");
        assert_eq!(encode_name("statestore"), "statestore");
        assert_eq!(encode_name("../x"), "%2E%2E%2Fx");
    }

    #[test]
    fn long_names_are_hashed_and_distinct() {
        let a = "a".repeat(253);
        let mut b = "a".repeat(252);
        b.push('b');
        let (ea, eb) = (encode_name(&a), encode_name(&b));
        assert!(ea.len() <= 200 && eb.len() <= 200);
        assert_ne!(ea, eb);
        let upper = "A".repeat(253);
        assert!(encode_name(&upper).len() <= 200);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(254)).is_err());
        assert!(validate_name("a\0b").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(253)).is_ok());
    }
}
