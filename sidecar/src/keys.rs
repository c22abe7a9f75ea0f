//! daprd's state key prefixing (pluggable spec §5.1): the key the component sees is
//! `<prefix>||<app key>`, the prefix chosen by the component's `keyPrefix` metadata.

/// The separator daprd puts between prefix and key.
pub const SEPARATOR: &str = "||";

/// The `keyPrefix` strategy of one state store, resolved to the prefix itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(Option<String>);

impl KeyPrefix {
    /// Resolves `keyPrefix` (matched case-insensitively by name, its value compared
    /// case-insensitively for the strategy names): absent/`appid` → the app id (no prefix if
    /// the sidecar has none), `name` → the store name, `namespace` → `<namespace>.<appId>`
    /// (the app id without a namespace), `none` → no prefix, anything else → itself.
    pub fn resolve(
        metadata: &std::collections::BTreeMap<String, String>,
        store_name: &str,
        app_id: &str,
        namespace: Option<&str>,
    ) -> Result<KeyPrefix, String> {
        let value = metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("keyPrefix"))
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let prefix = match value.to_ascii_lowercase().as_str() {
            "" | "appid" => non_empty(app_id.to_string()),
            "name" => Some(store_name.to_string()),
            "namespace" => match namespace {
                Some(ns) if !app_id.is_empty() => Some(format!("{ns}.{app_id}")),
                _ => non_empty(app_id.to_string()),
            },
            "none" => None,
            _ => {
                if value.contains(SEPARATOR) {
                    return Err(format!(
                        "keyPrefix {value:?} of state store {store_name:?} can't contain '{SEPARATOR}'"
                    ));
                }
                Some(value.to_string())
            }
        };
        Ok(KeyPrefix(prefix))
    }

    /// The key sent to the component; app keys containing `||` are refused, as daprd does.
    pub fn apply(&self, key: &str) -> Result<String, String> {
        if key.contains(SEPARATOR) {
            return Err(format!(
                "input key/keyPrefix '{key}' can't contain '{SEPARATOR}'"
            ));
        }
        Ok(match &self.0 {
            Some(prefix) => format!("{prefix}{SEPARATOR}{key}"),
            None => key.to_string(),
        })
    }

    /// The app's key from a stored key: daprd splits on `||` and keeps the second part.
    pub fn strip(stored: &str) -> String {
        let mut parts = stored.split(SEPARATOR);
        match (parts.next(), parts.next()) {
            (Some(_), Some(second)) => second.to_string(),
            _ => stored.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn prefix(value: Option<&str>, namespace: Option<&str>) -> KeyPrefix {
        let mut meta = BTreeMap::new();
        if let Some(v) = value {
            meta.insert("KEYPREFIX".to_string(), v.to_string());
        }
        KeyPrefix::resolve(&meta, "store", "app", namespace).unwrap()
    }

    #[test]
    fn strategies() {
        assert_eq!(prefix(None, None).apply("k").unwrap(), "app||k");
        assert_eq!(prefix(Some("AppId"), None).apply("k").unwrap(), "app||k");
        assert_eq!(prefix(Some("name"), None).apply("k").unwrap(), "store||k");
        assert_eq!(
            prefix(Some("namespace"), Some("prod")).apply("k").unwrap(),
            "prod.app||k"
        );
        assert_eq!(
            prefix(Some("namespace"), None).apply("k").unwrap(),
            "app||k"
        );
        assert_eq!(prefix(Some("none"), None).apply("k").unwrap(), "k");
        assert_eq!(
            prefix(Some("custom"), None).apply("k").unwrap(),
            "custom||k"
        );
        let no_app = KeyPrefix::resolve(&BTreeMap::new(), "store", "", None).unwrap();
        assert_eq!(no_app.apply("k").unwrap(), "k");
    }

    #[test]
    fn separators_are_refused_and_stripped() {
        assert!(prefix(None, None).apply("a||b").is_err());
        let meta = BTreeMap::from([("keyPrefix".to_string(), "x||y".to_string())]);
        assert!(KeyPrefix::resolve(&meta, "s", "a", None).is_err());
        assert_eq!(KeyPrefix::strip("app||k"), "k");
        assert_eq!(KeyPrefix::strip("k"), "k");
        assert_eq!(KeyPrefix::strip("a||b||c"), "b");
    }
}
