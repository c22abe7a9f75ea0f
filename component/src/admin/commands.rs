//! Each admin command, written once: the ones that work both ways take a [`Keyspace`]
//! (offline or online); the offline-only ones take the data directory and the instance. They
//! print results on stdout (records through [`super::output`]) and notes on stderr.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::offline::{self, Offline};
use super::online::Online;
use super::output::{self, Progress};
use super::{Keyspace, Write};

fn io(err: std::io::Error) -> String {
    err.to_string()
}

/// The keyspace a command works on: online through `socket` when given, else the instance's
/// file in the data directory, opened offline.
pub fn open(
    data_dir: &Path,
    instance: &str,
    socket: Option<&Path>,
) -> Result<Box<dyn Keyspace>, String> {
    Ok(match socket {
        Some(socket) => Box::new(Online::connect(socket, instance)?),
        None => Box::new(Offline::open(data_dir, instance, false)?),
    })
}

/// `roost get`: the value (etag and expiry on stderr), or the record as JSON.
pub fn get(keyspace: &mut dyn Keyspace, key: &str, json: bool) -> Result<(), String> {
    let record = keyspace
        .get(key)?
        .ok_or_else(|| format!("{key:?} not found"))?;
    output::print_record(&mut std::io::stdout().lock(), &record, json)
}

/// `roost set`: writes one record and prints the etag that write produced.
pub fn set(keyspace: &mut dyn Keyspace, write: Write) -> Result<(), String> {
    let etag = keyspace.set(write)?;
    writeln!(std::io::stdout(), "etag {etag}").map_err(io)
}

/// `roost delete`.
pub fn delete(keyspace: &mut dyn Keyspace, key: &str, etag: Option<String>) -> Result<(), String> {
    keyspace.delete(key, etag)
}

/// `roost scan`: records whose key starts with `prefix`, as JSON Lines.
pub fn scan(keyspace: &mut dyn Keyspace, prefix: &str, limit: usize) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let more = keyspace.scan(prefix, limit, &mut |record| {
        writeln!(out, "{}", output::record_json(&record)).map_err(io)
    })?;
    if more {
        eprintln!("(more records follow; raise --limit)");
    }
    Ok(())
}

/// `roost query`: the rows as JSON Lines, the next page's token on stderr.
pub fn query(keyspace: &mut dyn Keyspace, query: &str) -> Result<(), String> {
    let page = keyspace.query(query)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for row in &page.rows {
        writeln!(out, "{}", output::row_json(row)).map_err(io)?;
    }
    if let Some(token) = page.token {
        eprintln!("next page token: {token}");
    }
    Ok(())
}

/// `roost stats`: counts, file size and configuration as JSON.
pub fn stats(keyspace: &mut dyn Keyspace) -> Result<(), String> {
    let stats = keyspace.stats()?;
    writeln!(std::io::stdout(), "{stats:#}").map_err(io)
}

/// `roost backup`: a consistent snapshot into the new file `out`.
pub fn backup(keyspace: &mut dyn Keyspace, out: &Path) -> Result<(), String> {
    let (records, bytes) = keyspace.backup(out)?;
    writeln!(
        std::io::stdout(),
        "backup {}: {records} records, {bytes} bytes",
        out.display()
    )
    .map_err(io)
}

/// `roost export`: every live record as JSON Lines, into `file` or stdout (offline).
pub fn export(data_dir: &Path, instance: &str, file: Option<PathBuf>) -> Result<(), String> {
    let keyspace = Offline::open(data_dir, instance, false)?;
    match file {
        Some(path) => {
            let file =
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            offline::export(keyspace.database(), &mut std::io::BufWriter::new(file))?;
        }
        None => {
            offline::export(keyspace.database(), &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}

/// `roost import`: JSON Lines from `export`, written back exactly (offline; creates the
/// instance if it does not exist).
pub fn import(data_dir: &Path, instance: &str, input: Option<PathBuf>) -> Result<(), String> {
    let keyspace = Offline::open(data_dir, instance, true)?;
    match input {
        Some(path) => {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            offline::import(keyspace.database(), &mut std::io::BufReader::new(file))?;
        }
        None => {
            offline::import(keyspace.database(), &mut std::io::stdin().lock())?;
        }
    }
    Ok(())
}

/// `roost rekey`: every record re-encoded under the current settings (offline).
pub fn rekey(data_dir: &Path, instance: &str) -> Result<(), String> {
    let keyspace = Offline::open(data_dir, instance, false)?;
    let progress = Progress::working("rekey");
    let n = keyspace
        .database()
        .rewrite_all()
        .map_err(|e| e.to_string())?;
    progress.finish(&format!("{n} records"));
    writeln!(std::io::stdout(), "rewrote {n} records").map_err(io)
}

/// `roost restore`: a snapshot put in place of the keyspace (offline).
pub fn restore(data_dir: &Path, instance: &str, input: &Path, force: bool) -> Result<(), String> {
    let records = offline::restore(data_dir, instance, input, force)?;
    writeln!(
        std::io::stdout(),
        "restored {records} records into instance {instance:?}"
    )
    .map_err(io)
}

/// `roost compact`: the keyspace rewritten into a fresh file (offline).
pub fn compact(data_dir: &Path, instance: &str) -> Result<(), String> {
    let progress = Progress::working("compact");
    let (before, after) = offline::compact(data_dir, instance)?;
    progress.finish("done");
    writeln!(
        std::io::stdout(),
        "compacted: {before} bytes → {after} bytes"
    )
    .map_err(io)
}
