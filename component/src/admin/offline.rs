//! Offline administration of a data directory: [`Offline`] opens one instance's keyspace
//! directly, while no `roost serve` holds it (its file is then locked, and the commands refuse
//! with a clear message), for the [`Keyspace`] commands and for `export | import | rekey |
//! restore | compact`, which only work offline. Encryption keys come from the environment (`ROOST_ENCRYPTION_KEY`,
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
use roost_engine::{Database, EncryptionKey, Error, ImportRecord};
use serde_json::{Value, json};

use super::output::{Progress, record_json};
use super::{Keyspace, QueryPage, Record, Row};
use crate::config::{InstanceConfig, InstanceSecrets};
use crate::instances::{self, CONFIG_FILE, DATA_FILE, PersistedInstance};

/// One instance's keyspace, opened from the data directory.
pub struct Offline {
    db: Database,
    data_dir: PathBuf,
    instance: String,
}

impl Offline {
    /// Opens the instance's keyspace. With `create`, a missing instance is created with the
    /// default configuration (for `import`).
    pub fn open(data_dir: &Path, instance: &str, create: bool) -> Result<Offline, String> {
        Ok(Offline {
            db: open_offline(data_dir, instance, create)?,
            data_dir: data_dir.to_path_buf(),
            instance: instance.to_string(),
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// An engine record under `key`, as the commands print it.
pub fn record(key: &[u8], record: roost_engine::Record) -> Record {
    Record {
        key: key.to_vec(),
        etag: record.etag.to_string(),
        value: record.value,
        expires_at_unix_ms: record.expires_at_unix_ms,
        content_type: record.content_type,
    }
}

fn text(err: Error) -> String {
    err.to_string()
}

impl Keyspace for Offline {
    fn get(&mut self, key: &str) -> Result<Option<Record>, String> {
        Ok(self
            .db
            .get(key)
            .map_err(text)?
            .map(|found| record(key.as_bytes(), found)))
    }

    fn set(&mut self, write: super::Write) -> Result<String, String> {
        let mut request = roost_engine::SetRequest::new(write.key, write.value);
        request.etag = write.etag;
        request.ttl_in_seconds = write.ttl_in_seconds;
        request.content_type = write.content_type;
        Ok(self.db.set(request).map_err(text)?.to_string())
    }

    fn delete(&mut self, key: &str, etag: Option<String>) -> Result<(), String> {
        let mut request = roost_engine::DeleteRequest::new(key);
        request.etag = etag;
        self.db.delete(request).map_err(text)
    }

    fn scan(
        &mut self,
        prefix: &str,
        limit: usize,
        each: &mut dyn FnMut(Record) -> Result<(), String>,
    ) -> Result<bool, String> {
        let page = self.db.scan(prefix, None, limit).map_err(text)?;
        for (key, found) in page.records {
            each(record(&key, found))?;
        }
        Ok(page.next.is_some())
    }

    fn query(&mut self, query_json: &str) -> Result<QueryPage, String> {
        let query = roost_engine::Query::parse_json(query_json).map_err(text)?;
        let page = self.db.query(&query).map_err(text)?;
        Ok(QueryPage {
            rows: page
                .rows
                .into_iter()
                .map(|row| Row {
                    key: String::from_utf8_lossy(&row.key).into_owned(),
                    value: row.value,
                    etag: row.etag.to_string(),
                })
                .collect(),
            token: page.token,
        })
    }

    fn stats(&mut self) -> Result<Value, String> {
        stats(&self.db, &self.data_dir, &self.instance)
    }

    fn backup(&mut self, out: &Path) -> Result<(u64, u64), String> {
        let progress = Progress::working("backup");
        let stats = self.db.snapshot_to(out).map_err(text)?;
        progress.finish(&format!("{} records", stats.records));
        Ok((stats.records, stats.bytes))
    }
}

/// Records written per import transaction.
const IMPORT_BATCH: usize = 1000;
fn instance_dir(data_dir: &Path, instance: &str) -> Result<PathBuf, String> {
    instances::validate_name(instance).map_err(|e| e.message())?;
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

/// The instance's persisted configuration. With `create`, a missing instance is created with
/// the default configuration (for `import` and `restore`).
fn instance_config(
    data_dir: &Path,
    instance: &str,
    create: bool,
) -> Result<InstanceConfig, String> {
    let dir = instance_dir(data_dir, instance)?;
    let config_path = dir.join(CONFIG_FILE);
    match std::fs::read(&config_path) {
        Ok(bytes) => {
            let persisted: PersistedInstance = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is unreadable: {e}", config_path.display()))?;
            Ok(persisted.config)
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
            Ok(config)
        }
        Err(_) => Err(format!(
            "no instance {instance:?} in {} (it is created by daprd's Init, or by `roost import` / `roost restore`)",
            data_dir.display()
        )),
    }
}

/// Opens the database file at `path` with the instance's configuration and the keys from the
/// environment.
fn open_file(config: &InstanceConfig, path: &Path, instance: &str) -> Result<Database, String> {
    let secrets = secrets_from_env()?;
    let options = config.engine_options(path, &secrets).sweep_interval(None);
    Database::open(options).map_err(|e| match e {
        Error::AlreadyOpen { .. } => format!(
            "instance {instance:?} is open in a running `roost serve` (its file is locked): stop the \
             server first, or work through it with --socket <folder>/<name>.sock"
        ),
        Error::EncryptionKey(_) => format!(
            "{e} — set ROOST_ENCRYPTION_KEY (and ROOST_PREVIOUS_ENCRYPTION_KEY after a rotation)"
        ),
        other => other.to_string(),
    })
}

/// Opens an instance's keyspace offline. With `create`, a missing instance is created with the
/// default configuration (for `import`).
fn open_offline(data_dir: &Path, instance: &str, create: bool) -> Result<Database, String> {
    let config = instance_config(data_dir, instance, create)?;
    let dir = instance_dir(data_dir, instance)?;
    open_file(&config, &dir.join(DATA_FILE), instance)
}

/// `roost restore`: puts a snapshot (from `roost backup`) in place of the instance's keyspace,
/// offline. The snapshot is first copied next to the keyspace and opened with the instance's
/// keys (so a wrong file or key fails before anything is replaced); an instance holding
/// records is replaced only with `force`. Returns the records restored.
pub fn restore(data_dir: &Path, instance: &str, input: &Path, force: bool) -> Result<u64, String> {
    let config = instance_config(data_dir, instance, true)?;
    let dir = instance_dir(data_dir, instance)?;
    let target = dir.join(DATA_FILE);
    let staged = dir.join(format!("{DATA_FILE}.restoring"));
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(input, &staged).map_err(|e| format!("cannot copy {}: {e}", input.display()))?;
    let restored = (|| {
        let db = open_file(&config, &staged, instance)
            .map_err(|e| format!("{} is not a usable snapshot: {e}", input.display()))?;
        let records = db.keyspace_stats().map_err(|e| e.to_string())?.records;
        db.close().map_err(|e| e.to_string())?;
        Ok::<_, String>(records)
    })();
    let records = match restored {
        Ok(records) => records,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    if target.exists() {
        // Also proves no server holds the instance: its file would be locked.
        let current = open_file(&config, &target, instance);
        let current = match current {
            Ok(db) => db,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        let existing = current.keyspace_stats().map_err(|e| e.to_string())?.records;
        current.close().map_err(|e| e.to_string())?;
        drop(current);
        if existing > 0 && !force {
            let _ = std::fs::remove_file(&staged);
            return Err(format!(
                "instance {instance:?} holds {existing} records; restoring replaces them — add --force"
            ));
        }
    }
    roost_engine::remove_log_files(&target).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, &target).map_err(|e| e.to_string())?;
    sync_dir(&dir);
    Ok(records)
}

/// `roost compact`: rewrites the keyspace into a fresh file (a snapshot) and swaps it in,
/// offline, returning the file size before and after (the log is checkpointed first).
pub fn compact(data_dir: &Path, instance: &str) -> Result<(u64, u64), String> {
    let config = instance_config(data_dir, instance, false)?;
    let dir = instance_dir(data_dir, instance)?;
    let target = dir.join(DATA_FILE);
    let staged = dir.join(format!("{DATA_FILE}.compacting"));
    let _ = std::fs::remove_file(&staged);
    let db = open_file(&config, &target, instance)?;
    db.sync().map_err(|e| e.to_string())?;
    let before = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    let stats = db.snapshot_to(&staged).map_err(|e| e.to_string());
    db.close().map_err(|e| e.to_string())?;
    drop(db);
    let stats = match stats {
        Ok(stats) => stats,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    roost_engine::remove_log_files(&target).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, &target).map_err(|e| e.to_string())?;
    sync_dir(&dir);
    Ok((before, stats.bytes))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
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
pub fn export(db: &Database, out: &mut dyn Write) -> Result<usize, String> {
    let total = db.keyspace_stats().map(|s| s.records).unwrap_or(0);
    let mut progress = Progress::new("export", "records", total);
    let mut after: Option<Vec<u8>> = None;
    let mut count = 0;
    loop {
        let page = db
            .scan("", after.as_deref(), 1000)
            .map_err(|e| e.to_string())?;
        for (key, found) in page.records {
            let line = record_json(&record(&key, found));
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            count += 1;
            progress.set(count as u64);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    progress.finish(&format!("{count} records"));
    Ok(count)
}

/// Reads JSON Lines and imports them exactly; returns how many.
pub fn import(db: &Database, input: &mut dyn BufRead) -> Result<usize, String> {
    let mut progress = Progress::new("import", "records", 0);
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
            progress.set(count as u64);
        }
    }
    if !batch.is_empty() {
        count += db.import(batch).map_err(|e| e.to_string())?;
    }
    db.sync().map_err(|e| e.to_string())?;
    progress.finish(&format!("{count} records"));
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
