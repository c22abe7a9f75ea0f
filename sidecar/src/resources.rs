//! Loading Dapr resource YAMLs the way self-hosted daprd does (`--resources-path`): every
//! `*.yaml` / `*.yml` file in the folders, several documents per file, `kind: Component` only,
//! `scopes` honoured. State stores (`type: state.<name>`) are kept; local-file secret stores
//! (`secretstores.local.file`) resolve `secretKeyRef` values; every other component type is
//! skipped with a warning.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default of `spec.initTimeout` in daprd.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One state store component, its metadata resolved (secrets, env refs, placeholders).
#[derive(Debug, Clone)]
pub struct StateComponentSpec {
    /// `metadata.name`: the store name apps use and the `x-component-instance` value.
    pub name: String,
    /// `spec.type`, e.g. `state.roost`.
    pub component_type: String,
    /// `spec.version` (empty, `v0` or `v1` for pluggable components).
    pub version: String,
    /// `spec.metadata` as name → value, names as written in the YAML.
    pub metadata: BTreeMap<String, String>,
    pub init_timeout: Duration,
    pub ignore_errors: bool,
    /// Where it was defined, for messages.
    pub source: PathBuf,
}

/// Everything loaded from the resources paths.
#[derive(Debug, Default)]
pub struct Resources {
    pub state_stores: Vec<StateComponentSpec>,
    /// Resource documents skipped, with why (logged as warnings).
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: DocMetadata,
    #[serde(default)]
    spec: Option<ComponentSpecDoc>,
    #[serde(default)]
    auth: Option<AuthDoc>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize, Default)]
struct DocMetadata {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComponentSpecDoc {
    #[serde(default, rename = "type")]
    component_type: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: Vec<MetadataItem>,
    #[serde(default)]
    init_timeout: Option<String>,
    #[serde(default)]
    ignore_errors: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataItem {
    name: String,
    #[serde(default)]
    value: Option<serde_norway::Value>,
    #[serde(default)]
    secret_key_ref: Option<SecretKeyRef>,
    #[serde(default)]
    env_ref: Option<String>,
}

#[derive(Deserialize)]
struct SecretKeyRef {
    name: String,
    #[serde(default)]
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthDoc {
    #[serde(default)]
    secret_store: String,
}

/// A component document before its metadata is resolved.
struct RawComponent {
    name: String,
    spec: ComponentSpecDoc,
    secret_store: String,
    source: PathBuf,
}

/// What placeholders in metadata values are replaced with (daprd: `{uuid}`, `{podName}`,
/// `{namespace}`, `{appID}`).
#[derive(Debug, Clone)]
pub struct Placeholders {
    pub app_id: String,
    pub namespace: Option<String>,
}

/// Loads the components of every resources path.
pub fn load(paths: &[PathBuf], placeholders: &Placeholders) -> Result<Resources, String> {
    let mut raw = Vec::new();
    let mut resources = Resources::default();
    for path in paths {
        for file in yaml_files(path)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            parse_file(&file, &text, placeholders, &mut raw, &mut resources.skipped)?;
        }
    }
    let mut names = HashMap::new();
    for component in &raw {
        if let Some(previous) = names.insert(component.name.clone(), component.source.clone()) {
            return Err(format!(
                "component {:?} is defined twice ({} and {})",
                component.name,
                previous.display(),
                component.source.display()
            ));
        }
    }
    let secret_stores: HashMap<String, LocalFileSecrets> = raw
        .iter()
        .filter(|c| c.spec.component_type == "secretstores.local.file")
        .map(|c| Ok((c.name.clone(), LocalFileSecrets::load(c)?)))
        .collect::<Result<_, String>>()?;
    for component in raw {
        let kind = component.spec.component_type.clone();
        if kind == "secretstores.local.file" {
            continue;
        }
        if !kind.starts_with("state.") {
            resources.skipped.push(format!(
                "{}: component {:?} of type {kind:?} skipped: roost-sidecar serves only state stores",
                component.source.display(),
                component.name
            ));
            continue;
        }
        let mut metadata = BTreeMap::new();
        for item in &component.spec.metadata {
            let value = resolve_item(&component, item, &secret_stores)?;
            metadata.insert(item.name.clone(), substitute(&value, placeholders));
        }
        let init_timeout = match &component.spec.init_timeout {
            Some(text) if !text.is_empty() => roost_component::config::parse_go_duration(text)
                .map_err(|why| {
                    format!(
                        "{}: component {:?}: initTimeout: {why}",
                        component.source.display(),
                        component.name
                    )
                })?,
            _ => DEFAULT_INIT_TIMEOUT,
        };
        resources.state_stores.push(StateComponentSpec {
            name: component.name,
            component_type: kind,
            version: component.spec.version,
            metadata,
            init_timeout,
            ignore_errors: component.spec.ignore_errors,
            source: component.source,
        });
    }
    Ok(resources)
}

fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("resources path {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let entries = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list resources path {}: {e}", path.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let file = entry.path();
        let is_yaml = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn parse_file(
    file: &Path,
    text: &str,
    placeholders: &Placeholders,
    raw: &mut Vec<RawComponent>,
    skipped: &mut Vec<String>,
) -> Result<(), String> {
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(document)
            .map_err(|e| format!("{}: document {}: {e}", file.display(), index + 1))?;
        if value.is_null() {
            continue;
        }
        let doc: Document = serde_norway::from_value(value)
            .map_err(|e| format!("{}: document {}: {e}", file.display(), index + 1))?;
        if doc.kind != "Component" {
            skipped.push(format!(
                "{}: {:?} resource {:?} skipped: roost-sidecar loads only components",
                file.display(),
                doc.kind,
                doc.metadata.name
            ));
            continue;
        }
        if !doc.scopes.is_empty() && !doc.scopes.iter().any(|s| s == &placeholders.app_id) {
            skipped.push(format!(
                "{}: component {:?} skipped: its scopes do not include app id {:?}",
                file.display(),
                doc.metadata.name,
                placeholders.app_id
            ));
            continue;
        }
        if doc.metadata.name.is_empty() {
            return Err(format!(
                "{}: a component has no metadata.name",
                file.display()
            ));
        }
        let spec = doc.spec.ok_or_else(|| {
            format!(
                "{}: component {:?} has no spec",
                file.display(),
                doc.metadata.name
            )
        })?;
        raw.push(RawComponent {
            name: doc.metadata.name,
            spec,
            secret_store: doc.auth.map(|a| a.secret_store).unwrap_or_default(),
            source: file.to_path_buf(),
        });
    }
    Ok(())
}

fn scalar_text(value: &serde_norway::Value) -> Option<String> {
    match value {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn resolve_item(
    component: &RawComponent,
    item: &MetadataItem,
    secret_stores: &HashMap<String, LocalFileSecrets>,
) -> Result<String, String> {
    let at = || {
        format!(
            "{}: component {:?}, metadata {:?}",
            component.source.display(),
            component.name,
            item.name
        )
    };
    if let Some(reference) = &item.secret_key_ref {
        if component.secret_store.is_empty() {
            return Err(format!(
                "{}: secretKeyRef needs a secret store: set auth.secretStore to the name of a \
                 secretstores.local.file component",
                at()
            ));
        }
        let store = secret_stores.get(&component.secret_store).ok_or_else(|| {
            format!(
                "{}: secret store {:?} is not loaded (roost-sidecar reads only \
                 secretstores.local.file components from the resources path)",
                at(),
                component.secret_store
            )
        })?;
        let key = if reference.key.is_empty() {
            &reference.name
        } else {
            &reference.key
        };
        return store.get(&reference.name, key).ok_or_else(|| {
            format!(
                "{}: secret {:?} (key {key:?}) not found in secret store {:?} ({})",
                at(),
                reference.name,
                component.secret_store,
                store.file.display()
            )
        });
    }
    if let Some(var) = &item.env_ref {
        return std::env::var(var)
            .map_err(|_| format!("{}: environment variable {var:?} is not set", at()));
    }
    match &item.value {
        None => Ok(String::new()),
        Some(value) => scalar_text(value)
            .ok_or_else(|| format!("{}: value must be a string, number or boolean", at())),
    }
}

fn substitute(value: &str, placeholders: &Placeholders) -> String {
    if !value.contains('{') {
        return value.to_string();
    }
    let namespace = match &placeholders.namespace {
        Some(ns) => format!("{ns}.{}", placeholders.app_id),
        None => placeholders.app_id.clone(),
    };
    let mut out = value
        .replace("{appID}", &placeholders.app_id)
        .replace("{namespace}", &namespace)
        .replace(
            "{podName}",
            &std::env::var("POD_NAME").unwrap_or_else(|_| placeholders.app_id.clone()),
        );
    while out.contains("{uuid}") {
        out = out.replacen("{uuid}", &crate::uuid_v4(), 1);
    }
    out
}

/// A `secretstores.local.file` secret store: a JSON file, nested objects flattened with
/// `nestedSeparator` (default `:`), or with `multiValued: "true"` one secret per top-level key
/// holding several values.
struct LocalFileSecrets {
    file: PathBuf,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl LocalFileSecrets {
    fn load(component: &RawComponent) -> Result<Self, String> {
        let meta: HashMap<&str, String> = component
            .spec
            .metadata
            .iter()
            .filter_map(|m| Some((m.name.as_str(), scalar_text(m.value.as_ref()?)?)))
            .collect();
        let at = format!(
            "{}: secret store {:?}",
            component.source.display(),
            component.name
        );
        let file = PathBuf::from(
            meta.get("secretsFile")
                .filter(|f| !f.is_empty())
                .ok_or_else(|| format!("{at}: metadata secretsFile is required"))?,
        );
        let separator = meta
            .get("nestedSeparator")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| ":".to_string());
        let multi_valued = meta
            .get("multiValued")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("{at}: cannot read secretsFile {}: {e}", file.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{at}: secretsFile {} is not JSON: {e}", file.display()))?;
        let serde_json::Value::Object(top) = json else {
            return Err(format!(
                "{at}: secretsFile {} must hold a JSON object",
                file.display()
            ));
        };
        let mut secrets = HashMap::new();
        if multi_valued {
            for (name, value) in top {
                let mut values = BTreeMap::new();
                flatten("", &value, &separator, &mut values);
                secrets.insert(name, values);
            }
        } else {
            let mut flat = BTreeMap::new();
            flatten("", &serde_json::Value::Object(top), &separator, &mut flat);
            for (name, value) in flat {
                secrets.insert(name.clone(), BTreeMap::from([(name, value)]));
            }
        }
        Ok(LocalFileSecrets { file, secrets })
    }

    fn get(&self, name: &str, key: &str) -> Option<String> {
        self.secrets.get(name)?.get(key).cloned()
    }
}

fn flatten(
    prefix: &str,
    value: &serde_json::Value,
    separator: &str,
    out: &mut BTreeMap<String, String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}{separator}{key}")
                };
                flatten(&name, item, separator, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders() -> Placeholders {
        Placeholders {
            app_id: "orders".into(),
            namespace: None,
        }
    }

    #[test]
    fn loads_state_stores_skips_others_and_resolves_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets.json");
        std::fs::write(&secrets, r#"{"roost": {"key": "00ff"}, "plain": "x"}"#).unwrap();
        std::fs::write(
            dir.path().join("components.yaml"),
            format!(
                r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.roost
  version: v1
  initTimeout: 1m30s
  metadata:
  - name: keyPrefix
    value: "{{appID}}-x"
  - name: ttlInSeconds
    value: 60
  - name: encryptionKey
    secretKeyRef:
      name: "roost:key"
auth:
  secretStore: local
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: local
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: {}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: elsewhere
spec:
  type: state.roost
scopes: ["billing"]
---
kind: Configuration
metadata:
  name: tracing
"#,
                secrets.display()
            ),
        )
        .unwrap();
        let loaded = load(&[dir.path().to_path_buf()], &placeholders()).unwrap();
        assert_eq!(loaded.state_stores.len(), 1);
        let store = &loaded.state_stores[0];
        assert_eq!(store.name, "statestore");
        assert_eq!(store.component_type, "state.roost");
        assert_eq!(store.init_timeout, Duration::from_secs(90));
        assert_eq!(store.metadata["keyPrefix"], "orders-x");
        assert_eq!(store.metadata["ttlInSeconds"], "60");
        assert_eq!(store.metadata["encryptionKey"], "00ff");
        assert_eq!(loaded.skipped.len(), 3, "{:?}", loaded.skipped);
    }

    #[test]
    fn a_missing_secret_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            "kind: Component\nmetadata: {name: s}\nspec:\n  type: state.roost\n  metadata:\n  - name: k\n    secretKeyRef: {name: nope}\n",
        )
        .unwrap();
        let err = load(&[dir.path().to_path_buf()], &placeholders()).unwrap_err();
        assert!(err.contains("auth.secretStore"), "{err}");
    }

    #[test]
    fn init_timeouts_are_go_durations() {
        let parse = roost_component::config::parse_go_duration;
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1h1m"), Ok(Duration::from_secs(3660)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("5").is_err(), "Go needs a unit");
        assert!(parse("5x").is_err());
    }
}
