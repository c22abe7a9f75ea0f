//! Offline administration of a data directory: `roost get | set | delete | scan | query |
//! stats | export | import | rekey` open one instance's keyspace directly, while no
//! `roost serve` holds it (its file is then locked, and the commands refuse with a clear
//! message). Encryption keys come from the environment (`ROOST_ENCRYPTION_KEY`,
//! `ROOST_PREVIOUS_ENCRYPTION_KEY`, 64 hex characters each), never from the command line,
//! where other users could read them.
//!
//! Export format (JSON Lines, one record per line):
//! `{"key": "...", "value": "<base64>", "etag": "12", "expiresAt": 1767225600000 | null,
//!   "contentType": "..." | null}`. Import writes records back exactly (same etags), so an
//! imported keyspace answers exactly as the original.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use roost_engine::{Database, EncryptionKey, Error, ImportRecord, Record};
use serde_json::{Value, json};

use crate::config::{InstanceConfig, InstanceSecrets};
use crate::instances::{self, CONFIG_FILE, DATA_FILE, PersistedInstance};

/// Records written per import transaction.
const IMPORT_BATCH: usize = 1000;
/// Records per progress line.
const PROGRESS_EVERY: usize = 10_000;

fn instance_dir(data_dir: &Path, instance: &str) -> Result<PathBuf, String> {
    instances::validate_name(instance).map_err(|s| s.message().to_string())?;
    Ok(data_dir
        .join("instances")
        .join(instances::encode_name(instance)))
}

fn secrets_from_env() -> Result<InstanceSecrets, String> {
    let key = |var: &str| -> Result<Option<EncryptionKey>, String> {
        match std::env::var(var) {
            Ok(hex) if !hex.is_empty() => EncryptionKey::from_hex(&hex)
                .map(Some)
                .map_err(|e| format!("{var}: {e}")),
            _ => Ok(None),
        }
    };
    Ok(InstanceSecrets {
        encryption_key: key("ROOST_ENCRYPTION_KEY")?,
        previous_encryption_key: key("ROOST_PREVIOUS_ENCRYPTION_KEY")?,
    })
}

/// Opens an instance's keyspace offline. With `create`, a missing instance is created with the
/// default configuration (for `import`).
pub fn open_offline(data_dir: &Path, instance: &str, create: bool) -> Result<Database, String> {
    let dir = instance_dir(data_dir, instance)?;
    let config_path = dir.join(CONFIG_FILE);
    let config = match std::fs::read(&config_path) {
        Ok(bytes) => {
            let persisted: PersistedInstance = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is unreadable: {e}", config_path.display()))?;
            persisted.config
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            instances::create_private_dir(&dir).map_err(|e| e.to_string())?;
            let config = InstanceConfig::default();
            instances::write_config(
                &dir,
                &PersistedInstance {
                    name: instance.to_string(),
                    config: config.clone(),
                },
            )
            .map_err(|e| e.to_string())?;
            config
        }
        Err(_) => {
            return Err(format!(
                "no instance {instance:?} in {} (it is created by daprd's Init, or by `roost import`)",
                data_dir.display()
            ));
        }
    };
    let secrets = secrets_from_env()?;
    let options = config
        .engine_options(&dir.join(DATA_FILE), &secrets)
        .sweep_interval(None);
    Database::open(options).map_err(|e| match e {
        Error::AlreadyOpen { .. } => format!(
            "instance {instance:?} is open in a running `roost serve` (its file is locked); stop the server first"
        ),
        Error::EncryptionKey(_) => format!(
            "{e} — set ROOST_ENCRYPTION_KEY (and ROOST_PREVIOUS_ENCRYPTION_KEY after a rotation)"
        ),
        other => other.to_string(),
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One record as a JSON object (the export format).
pub fn record_json(key: &[u8], record: &Record) -> Value {
    json!({
        "key": String::from_utf8_lossy(key),
        "value": b64(&record.value),
        "etag": record.etag.to_string(),
        "expiresAt": record.expires_at_unix_ms,
        "contentType": record.content_type,
    })
}

/// Parses one export line back into a record to import.
pub fn parse_record(line: &str) -> Result<ImportRecord, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("missing {name:?}"));
    let key = field("key")?.as_str().ok_or("\"key\" is not a string")?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(
            field("value")?
                .as_str()
                .ok_or("\"value\" is not a string")?,
        )
        .map_err(|e| format!("\"value\" is not base64: {e}"))?;
    let etag = field("etag")?
        .as_str()
        .and_then(|e| e.parse::<u64>().ok())
        .ok_or("\"etag\" is not a decimal string")?;
    let expires_at_unix_ms = match v.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(x) => Some(x.as_u64().ok_or("\"expiresAt\" is not a number")?),
    };
    let content_type = match v.get("contentType") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_str()
                .ok_or("\"contentType\" is not a string")?
                .to_string(),
        ),
    };
    Ok(ImportRecord {
        key: key.as_bytes().to_vec(),
        value,
        etag,
        expires_at_unix_ms,
        content_type,
    })
}

/// Writes every live record as JSON Lines; returns how many.
pub fn export(
    db: &Database,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<usize, String> {
    let mut after: Option<Vec<u8>> = None;
    let mut count = 0;
    loop {
        let page = db
            .scan("", after.as_deref(), 1000)
            .map_err(|e| e.to_string())?;
        for (key, record) in &page.records {
            writeln!(out, "{}", record_json(key, record)).map_err(|e| e.to_string())?;
            count += 1;
            if count % PROGRESS_EVERY == 0 {
                let _ = writeln!(progress, "exported {count} records");
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    let _ = writeln!(progress, "exported {count} records in all");
    Ok(count)
}

/// Reads JSON Lines and imports them exactly; returns how many.
pub fn import(
    db: &Database,
    input: &mut dyn BufRead,
    progress: &mut dyn Write,
) -> Result<usize, String> {
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut count = 0;
    for (number, line) in input.lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(parse_record(&line).map_err(|e| format!("line {}: {e}", number + 1))?);
        if batch.len() == IMPORT_BATCH {
            count += db
                .import(std::mem::take(&mut batch))
                .map_err(|e| e.to_string())?;
            if count % PROGRESS_EVERY == 0 {
                let _ = writeln!(progress, "imported {count} records");
            }
        }
    }
    if !batch.is_empty() {
        count += db.import(batch).map_err(|e| e.to_string())?;
    }
    db.sync().map_err(|e| e.to_string())?;
    let _ = writeln!(progress, "imported {count} records in all");
    Ok(count)
}

/// Statistics of an instance as JSON (configuration without secrets).
pub fn stats(db: &Database, data_dir: &Path, instance: &str) -> Result<Value, String> {
    let dir = instance_dir(data_dir, instance)?;
    let stats = db.keyspace_stats().map_err(|e| e.to_string())?;
    let file_bytes = std::fs::metadata(dir.join(DATA_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let config: Value = std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("config").cloned())
        .unwrap_or(Value::Null);
    Ok(json!({
        "instance": instance,
        "records": stats.records,
        "liveRecords": stats.records.saturating_sub(stats.expired_pending),
        "expiredPending": stats.expired_pending,
        "indexEntries": stats.index_entries,
        "fileBytes": file_bytes,
        "indexedPaths": db.indexed_paths(),
        "config": config,
    }))
}
