//! Per-instance configuration from `Init` metadata, and its persisted (non-secret) form.
//!
//! Supported metadata keys (names matched case-insensitively, as Dapr does):
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `durability` | `immediate` (acknowledged = on disk) or `eventual` | `immediate` |
//! | `maxFlushDelay` | eventual mode's loss window: Go duration (`100ms`, `1s`) or milliseconds | `100ms` |
//! | `cacheSizeMB` | redb page cache, MiB (filled as pages are read) | `256` |
//! | `checkpointLogMB` | with `immediate` durability, the write-ahead log size (MiB) applied since the last checkpoint at which catch-up checkpoints (writes go on meanwhile) | `128` |
//! | `writebackChunkMB` | with `immediate` durability, how much of the data file's written pages go to the disk at a time ahead of a checkpoint's fsync, so the write-ahead log's fsync never waits behind a whole checkpoint; `0` leaves it all to the checkpoint | `4` |
//! | `maxUnappliedMB` | with `immediate` durability, the most memory (MiB) acknowledged writes not yet applied to the data file may hold before writers wait for catch-up | `256` |
//! | `maxValueSize` | largest value in bytes | `4128768` (4 MiB − 64 KiB, so any Get response fits daprd's 4 MiB limit) |
//! | `maxTransactionOps` | most operations per transaction, reported by `MultiMaxSize`; `0` = unlimited | `0` |
//! | `cleanupInterval` | how often expired records are deleted: Go duration or seconds; `0` disables (expired records stay invisible) | `1s` |
//! | `queryIndexes` | secondary indexes, in Dapr's Redis shape: `[{"name": "...", "indexes": [{"key": "a.b", "type": "TEXT"}]}]` | none |
//! | `indexedFields` | the simpler form: comma-separated dot paths, e.g. `status, product.value` | none |
//!
//! | `compression` | `none` or `zstd` (a value is stored compressed only when that makes it smaller) | `none` |
//! | `compressionLevel` | zstd level, 1–22 | `3` |
//! | `compressionMinSize` | values shorter than this (bytes) are never compressed | `256` |
//! | `encryptionKey` | 256-bit key as 64 hex characters (normally a `secretKeyRef`): values are encrypted at rest with XChaCha20-Poly1305 | none |
//! | `previousEncryptionKey` | the key before a rotation, still used to read records written under it | none |
//!
//! Keys daprd itself uses (`keyPrefix`, `actorStateStore`, `outbox*`, `primaryEncryptionKey`,
//! `secondaryEncryptionKey` — the last two make daprd encrypt in the sidecar, which hides JSON
//! from Roost and disables queries) and any other unknown key are accepted and ignored.
//!
//! The encryption keys are secrets: they live in [`InstanceSecrets`], never in the persisted
//! [`InstanceConfig`] (which keeps only their key ids), never in logs or `Debug` output.

use std::collections::HashMap;
use std::time::Duration;

use roost_engine::{CodecOptions, Compression, Durability, EncryptionKey, Limits, Options};
use serde::{Deserialize, Serialize};

/// The effective configuration of one instance. Holds no secrets, so it is persisted next to
/// the instance's data and used after a restart that daprd does not follow with `Init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceConfig {
    pub durability: DurabilitySetting,
    pub max_flush_delay_ms: u64,
    pub cache_size_mb: u64,
    /// Written by versions that had it; older persisted configurations get the default.
    #[serde(default = "default_checkpoint_log_mb")]
    pub checkpoint_log_mb: u64,
    #[serde(default = "default_max_unapplied_mb")]
    pub max_unapplied_mb: u64,
    #[serde(default = "default_writeback_chunk_mb")]
    pub writeback_chunk_mb: u64,
    pub max_value_size: usize,
    pub max_transaction_ops: u64,
    pub cleanup_interval_ms: u64,
    /// Dot paths with a secondary index (from `queryIndexes` and `indexedFields`).
    #[serde(default)]
    pub indexed_paths: Vec<String>,
    /// zstd settings, if compression is on.
    #[serde(default)]
    pub compression: Option<CompressionSetting>,
    /// Key id (hex) of `encryptionKey`, if encryption is on. The key itself is not stored.
    #[serde(default)]
    pub encryption_key_id: Option<String>,
    /// Key id (hex) of `previousEncryptionKey`, if set.
    #[serde(default)]
    pub previous_encryption_key_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressionSetting {
    pub level: i32,
    pub min_size: usize,
}

/// The secret part of an instance's configuration: never persisted, redacted in `Debug`.
#[derive(Debug, Clone, Default)]
pub struct InstanceSecrets {
    pub encryption_key: Option<EncryptionKey>,
    pub previous_encryption_key: Option<EncryptionKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    Immediate,
    Eventual,
}

fn default_checkpoint_log_mb() -> u64 {
    roost_engine::DEFAULT_CHECKPOINT_LOG_BYTES >> 20
}

fn default_max_unapplied_mb() -> u64 {
    roost_engine::DEFAULT_MAX_UNAPPLIED_BYTES >> 20
}

fn default_writeback_chunk_mb() -> u64 {
    roost_engine::DEFAULT_WRITEBACK_CHUNK_BYTES >> 20
}

/// daprd's receive limit for a response from a component (grpc-go's default).
pub const DAPRD_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            durability: DurabilitySetting::Immediate,
            max_flush_delay_ms: 100,
            cache_size_mb: (roost_engine::DEFAULT_CACHE_BYTES >> 20) as u64,
            checkpoint_log_mb: default_checkpoint_log_mb(),
            max_unapplied_mb: default_max_unapplied_mb(),
            writeback_chunk_mb: default_writeback_chunk_mb(),
            max_value_size: DAPRD_MAX_RESPONSE_BYTES - 64 * 1024,
            max_transaction_ops: 0,
            cleanup_interval_ms: 1000,
            indexed_paths: Vec::new(),
            compression: None,
            encryption_key_id: None,
            previous_encryption_key_id: None,
        }
    }
}

/// A metadata value that cannot be used; the message names the key and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl InstanceConfig {
    /// Reads the configuration from `Init` metadata (see the module docs for the keys).
    pub fn from_metadata(
        metadata: &HashMap<String, String>,
    ) -> Result<(InstanceConfig, InstanceSecrets), ConfigError> {
        let lookup: HashMap<String, &str> = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let get = |key: &str| {
            lookup
                .get(&key.to_ascii_lowercase())
                .copied()
                .filter(|v| !v.trim().is_empty())
        };
        let mut config = InstanceConfig::default();
        let mut secrets = InstanceSecrets::default();
        for (name, slot) in [
            ("encryptionKey", &mut secrets.encryption_key),
            (
                "previousEncryptionKey",
                &mut secrets.previous_encryption_key,
            ),
        ] {
            if let Some(value) = get(name) {
                // The error text never includes the value.
                *slot = Some(EncryptionKey::from_hex(value).map_err(|e| {
                    ConfigError(format!(
                        "metadata {name}: {}",
                        e.to_string().trim_start_matches("encryption key: ")
                    ))
                })?);
            }
        }
        if secrets.previous_encryption_key.is_some() && secrets.encryption_key.is_none() {
            return Err(ConfigError(
                "metadata previousEncryptionKey is set without encryptionKey; set the new key as encryptionKey".into(),
            ));
        }
        config.encryption_key_id = secrets
            .encryption_key
            .as_ref()
            .map(|k| format!("{:08x}", k.id()));
        config.previous_encryption_key_id = secrets
            .previous_encryption_key
            .as_ref()
            .map(|k| format!("{:08x}", k.id()));
        // The level and minimum size are checked even when compression is off, so a typo
        // shows up before it matters.
        let mut setting = CompressionSetting {
            level: 3,
            min_size: 256,
        };
        if let Some(level) = get("compressionLevel") {
            setting.level = parse_integer("compressionLevel", level, 1, 22)? as i32;
        }
        if let Some(min) = get("compressionMinSize") {
            setting.min_size = parse_integer("compressionMinSize", min, 0, 1 << 30)? as usize;
        }
        match get("compression").map(|v| v.trim().to_ascii_lowercase()) {
            None => {}
            Some(v) if v == "none" => {}
            Some(v) if v == "zstd" => config.compression = Some(setting),
            Some(other) => {
                return Err(ConfigError(format!(
                    "metadata compression={other:?}: use \"none\" or \"zstd\""
                )));
            }
        }
        if let Some(value) = get("durability") {
            config.durability = match value.trim().to_ascii_lowercase().as_str() {
                "immediate" => DurabilitySetting::Immediate,
                "eventual" => DurabilitySetting::Eventual,
                _ => {
                    return Err(ConfigError(format!(
                        "metadata durability={value:?}: use \"immediate\" or \"eventual\""
                    )));
                }
            };
        }
        if let Some(value) = get("maxFlushDelay") {
            let delay = parse_duration(value, Unit::Milliseconds)
                .map_err(|why| ConfigError(format!("metadata maxFlushDelay={value:?}: {why}")))?;
            if delay.is_zero() || delay > Duration::from_secs(60) {
                return Err(ConfigError(format!(
                    "metadata maxFlushDelay={value:?}: must be between 1ms and 60s"
                )));
            }
            config.max_flush_delay_ms = delay.as_millis() as u64;
        }
        if let Some(value) = get("cacheSizeMB") {
            config.cache_size_mb = parse_integer("cacheSizeMB", value, 1, 1 << 20)?;
        }
        if let Some(value) = get("checkpointLogMB") {
            config.checkpoint_log_mb = parse_integer("checkpointLogMB", value, 1, 1 << 16)?;
        }
        if let Some(value) = get("maxUnappliedMB") {
            config.max_unapplied_mb = parse_integer("maxUnappliedMB", value, 1, 1 << 20)?;
        }
        if let Some(value) = get("writebackChunkMB") {
            config.writeback_chunk_mb = parse_integer("writebackChunkMB", value, 0, 1 << 10)?;
        }
        if let Some(value) = get("maxValueSize") {
            config.max_value_size = parse_integer("maxValueSize", value, 1, 1 << 30)? as usize;
        }
        if let Some(value) = get("maxTransactionOps") {
            config.max_transaction_ops =
                parse_integer("maxTransactionOps", value, 0, i32::MAX as u64)?;
        }
        if let Some(value) = get("cleanupInterval").or_else(|| get("cleanupIntervalInSeconds")) {
            let interval = parse_duration(value, Unit::Seconds)
                .map_err(|why| ConfigError(format!("metadata cleanupInterval={value:?}: {why}")))?;
            config.cleanup_interval_ms = interval.as_millis() as u64;
        }
        if let Some(value) = get("queryIndexes") {
            config.indexed_paths.extend(parse_query_indexes(value)?);
        }
        if let Some(value) = get("indexedFields") {
            for path in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                check_path("indexedFields", path)?;
                config.indexed_paths.push(path.to_string());
            }
        }
        config.indexed_paths.sort();
        config.indexed_paths.dedup();
        Ok((config, secrets))
    }

    /// Engine options for this configuration, for the database file at `path`.
    pub fn engine_options(&self, path: &std::path::Path, secrets: &InstanceSecrets) -> Options {
        let durability = match self.durability {
            DurabilitySetting::Immediate => Durability::Immediate,
            DurabilitySetting::Eventual => Durability::Eventual {
                max_delay: Duration::from_millis(self.max_flush_delay_ms),
            },
        };
        let limits = Limits {
            max_value_bytes: self.max_value_size,
            // daprd appends one outbox operation per set after its MultiMaxSize check, so a
            // transaction may arrive with up to twice the advertised maximum.
            max_transaction_ops: (self.max_transaction_ops as usize).saturating_mul(2),
            ..Limits::default()
        };
        let sweep =
            (self.cleanup_interval_ms > 0).then(|| Duration::from_millis(self.cleanup_interval_ms));
        Options::new(path)
            .durability(durability)
            .cache_size_bytes((self.cache_size_mb as usize).saturating_mul(1024 * 1024))
            .checkpoint_log_bytes(self.checkpoint_log_mb << 20)
            .max_unapplied_bytes(self.max_unapplied_mb << 20)
            .writeback_chunk_bytes(self.writeback_chunk_mb << 20)
            .limits(limits)
            .sweep_interval(sweep)
            .indexes(self.indexed_paths.iter().cloned())
            .codec(CodecOptions {
                compression: self.compression.map(|c| Compression {
                    level: c.level,
                    min_size: c.min_size,
                }),
                encryption_key: secrets.encryption_key.clone(),
                previous_encryption_key: secrets.previous_encryption_key.clone(),
            })
    }
}

/// Reads Dapr's `queryIndexes` JSON (the Redis component's shape). Roost indexes every value
/// type at a path, so the declared `type` (`TEXT` / `NUMERIC`) is checked but not needed.
fn parse_query_indexes(value: &str) -> Result<Vec<String>, ConfigError> {
    let bad = |why: String| ConfigError(format!("metadata queryIndexes: {why}"));
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let list = parsed
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of {\"name\", \"indexes\"}".into()))?;
    let mut paths = Vec::new();
    for schema in list {
        let indexes = schema
            .get("indexes")
            .and_then(|i| i.as_array())
            .ok_or_else(|| bad(format!("entry {schema} has no \"indexes\" array")))?;
        for index in indexes {
            let key = index
                .get("key")
                .and_then(|k| k.as_str())
                .ok_or_else(|| bad(format!("index {index} has no string \"key\"")))?;
            match index.get("type").and_then(|t| t.as_str()) {
                None | Some("TEXT" | "NUMERIC") => {}
                Some(other) => {
                    return Err(bad(format!(
                        "index {key:?} has type {other:?}; use TEXT or NUMERIC"
                    )));
                }
            }
            check_path("queryIndexes", key)?;
            paths.push(key.to_string());
        }
    }
    Ok(paths)
}

fn check_path(key: &str, path: &str) -> Result<(), ConfigError> {
    if path.split('.').any(str::is_empty) {
        return Err(ConfigError(format!(
            "metadata {key}: {path:?} is not a dot path like \"person.org\""
        )));
    }
    Ok(())
}

fn parse_integer(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError(format!(
            "metadata {key}={value:?}: use an integer from {min} to {max}"
        ))),
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Milliseconds,
    Seconds,
}

/// Parses a Go-style duration (`1h2m3s`, `250ms`, `1.5s`) or a bare integer in `bare_unit`.
fn parse_duration(text: &str, bare_unit: Unit) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(match bare_unit {
            Unit::Milliseconds => Duration::from_millis(n),
            Unit::Seconds => Duration::from_secs(n),
        });
    }
    parse_go_duration(text)
}

/// Parses a Go duration as daprd reads it (`1h2m3s`, `250ms`, `1.5s`, `0`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("{text:?} has a number without a unit (use e.g. 500ms, 2s, 1m)")
            })?;
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (use e.g. 500ms, 2s, 1m)"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("{text:?} has an unknown unit {unit:?}")),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    if !(0.0..=1e9).contains(&total) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_daprd_keys_are_accepted() {
        let config = InstanceConfig::from_metadata(&metadata(&[
            ("keyPrefix", "appid"),
            ("actorStateStore", "true"),
            ("outboxPublishPubsub", "pubsub"),
            ("outboxPublishTopic", "t"),
            ("primaryEncryptionKey", "ignored-by-us"),
            ("somethingElse", "x"),
        ]))
        .unwrap()
        .0;
        assert_eq!(config, InstanceConfig::default());
    }

    #[test]
    fn options_are_parsed_case_insensitively() {
        let config = InstanceConfig::from_metadata(&metadata(&[
            ("Durability", "Eventual"),
            ("maxflushdelay", "250ms"),
            ("cacheSizeMB", "16"),
            ("CHECKPOINTLOGMB", "8"),
            ("maxValueSize", "1024"),
            ("maxTransactionOps", "100"),
            ("cleanupInterval", "1m30s"),
        ]))
        .unwrap()
        .0;
        assert_eq!(
            config,
            InstanceConfig {
                durability: DurabilitySetting::Eventual,
                max_flush_delay_ms: 250,
                cache_size_mb: 16,
                checkpoint_log_mb: 8,
                max_unapplied_mb: 256,
                writeback_chunk_mb: 4,
                max_value_size: 1024,
                max_transaction_ops: 100,
                cleanup_interval_ms: 90_000,
                indexed_paths: Vec::new(),
                compression: None,
                encryption_key_id: None,
                previous_encryption_key_id: None,
            }
        );
        let config = InstanceConfig::from_metadata(&metadata(&[("cleanupIntervalInSeconds", "0")]))
            .unwrap()
            .0;
        assert_eq!(config.cleanup_interval_ms, 0);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            ("durability", "sometimes"),
            ("maxFlushDelay", "soon"),
            ("maxFlushDelay", "0"),
            ("cacheSizeMB", "-1"),
            ("checkpointLogMB", "0"),
            ("checkpointLogMB", "65537"),
            ("maxUnappliedMB", "0"),
            ("writebackChunkMB", "1025"),
            ("writebackChunkMB", "-1"),
            ("maxValueSize", "big"),
            ("maxTransactionOps", "1.5"),
            ("cleanupInterval", "5x"),
            ("encryptionKey", "00"),
            ("encryptionKey", &"zz".repeat(32)),
            ("compression", "lz4"),
            ("compressionLevel", "99"),
            ("previousEncryptionKey", &"ab".repeat(32)),
        ] {
            let err = InstanceConfig::from_metadata(&metadata(&[(key, value)])).unwrap_err();
            assert!(err.0.contains(key), "{key}: {err}");
        }
        assert!(InstanceConfig::from_metadata(&metadata(&[("compression", "none")])).is_ok());
    }

    #[test]
    fn query_indexes_in_daprs_shape_and_the_simple_form() {
        let config = InstanceConfig::from_metadata(&metadata(&[
            (
                "queryIndexes",
                r#"[{"name":"qIndx","indexes":[{"key":"message","type":"TEXT"},{"key":"product.value","type":"NUMERIC"}]}]"#,
            ),
            ("indexedFields", "status, message"),
        ]))
        .unwrap()
        .0;
        assert_eq!(config.indexed_paths, ["message", "product.value", "status"]);
        for bad in [
            r#"{"a":1}"#,
            r#"[{"name":"x"}]"#,
            r#"[{"indexes":[{"key":"a","type":"GEO"}]}]"#,
            "nope",
        ] {
            let err =
                InstanceConfig::from_metadata(&metadata(&[("queryIndexes", bad)])).unwrap_err();
            assert!(err.0.contains("queryIndexes"), "{err}");
        }
        assert!(InstanceConfig::from_metadata(&metadata(&[("indexedFields", "a..b")])).is_err());
    }

    #[test]
    fn secrets_are_kept_apart_from_the_persisted_configuration() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let (config, secrets) = InstanceConfig::from_metadata(&metadata(&[
            ("encryptionKey", key),
            ("compression", "zstd"),
            ("compressionLevel", "5"),
        ]))
        .unwrap();
        let persisted = serde_json::to_string(&config).unwrap();
        assert!(!persisted.contains(&key[..16]), "{persisted}");
        assert!(!format!("{config:?} {secrets:?}").contains(&key[..16]));
        assert_eq!(config.encryption_key_id.as_deref().map(str::len), Some(8));
        assert_eq!(
            config.compression,
            Some(CompressionSetting {
                level: 5,
                min_size: 256
            })
        );
        let err =
            InstanceConfig::from_metadata(&metadata(&[("encryptionKey", &key[..60])])).unwrap_err();
        assert!(!err.0.contains(&key[..16]), "{err}");
    }

    /// `instance.json` written before `checkpointLogMB`, `maxUnappliedMB` or `writebackChunkMB`
    /// existed reads back
    /// with their defaults,
    /// so a daprd re-`Init` with the same metadata after an upgrade is still a no-op.
    #[test]
    fn a_configuration_persisted_without_newer_keys_reads_with_their_defaults() {
        let mut persisted = serde_json::to_value(InstanceConfig::default()).unwrap();
        for field in ["checkpointLogMb", "maxUnappliedMb", "writebackChunkMb"] {
            persisted
                .as_object_mut()
                .unwrap()
                .remove(field)
                .expect("the field's persisted name");
        }
        let config: InstanceConfig = serde_json::from_value(persisted).unwrap();
        assert_eq!(config, InstanceConfig::default());
        assert_eq!(config.checkpoint_log_mb, 128);
        assert_eq!(config.max_unapplied_mb, 256);
        assert_eq!(config.writeback_chunk_mb, 4);
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_duration("1h", Unit::Seconds).unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse_duration("1.5s", Unit::Seconds).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("20", Unit::Seconds).unwrap(),
            Duration::from_secs(20)
        );
        assert_eq!(
            parse_duration("20", Unit::Milliseconds).unwrap(),
            Duration::from_millis(20)
        );
        assert!(parse_duration("", Unit::Seconds).is_err());
        assert!(parse_duration("5", Unit::Seconds).is_ok());
        assert!(parse_duration("s", Unit::Seconds).is_err());
    }
}
