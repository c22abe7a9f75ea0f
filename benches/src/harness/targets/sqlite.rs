//! SQLite as Dapr's `state.sqlite` (§3): its `state` table, WAL journal, `busy_timeout` 2 s,
//! transactions begun IMMEDIATE, client-made UUID v4 etags, and values that arrive over gRPC as
//! bytes stored base64-encoded with `is_binary = 1`. Each worker has its own connection (the
//! component's `database/sql` pool opens one per concurrent call); calls run on tokio's
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Client, Fut, Item, OpError, uuid_v4};
use crate::Rng;

const LIVE: &str = "(expiration_time IS NULL OR expiration_time > CURRENT_TIMESTAMP)";

fn failed(err: rusqlite::Error) -> OpError {
    OpError::Failed(err.to_string())
}

/// Opens a connection the way the component configures it.
fn open(path: &Path) -> Result<Connection, OpError> {
    let connection = Connection::open(path).map_err(failed)?;
    connection
        .busy_timeout(Duration::from_secs(2))
        .map_err(failed)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(failed)?;
    Ok(connection)
}

/// Creates the component's schema (migration 0) in a new database file.
pub fn create_schema(path: &Path) -> Result<(), OpError> {
    open(path)?
        .execute_batch(
            "CREATE TABLE state (
                key TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL,
                is_binary BOOLEAN NOT NULL,
                etag TEXT NOT NULL,
                expiration_time TIMESTAMP DEFAULT NULL,
                update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
             );
             CREATE TABLE metadata (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO metadata (key, value) VALUES ('migrations', '1');",
        )
        .map_err(failed)
}

struct Inner {
    connection: Connection,
    rng: Rng,
}

/// One worker's connection.
pub struct SqliteClient {
    inner: Arc<Mutex<Inner>>,
}

impl SqliteClient {
    pub fn connect(path: &Path, seed: u64) -> Result<SqliteClient, OpError> {
        Ok(SqliteClient {
            inner: Arc::new(Mutex::new(Inner {
                connection: open(path)?,
                rng: Rng::new(seed),
            })),
        })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = inner
                .lock()
                .map_err(|_| OpError::Failed("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(OpError::failed)?
    }
}

fn decode(value: String, is_binary: bool) -> Result<Vec<u8>, OpError> {
    if is_binary {
        BASE64.decode(value).map_err(OpError::failed)
    } else {
        Ok(value.into_bytes())
    }
}

/// `INSERT OR REPLACE` of a gRPC (binary) value: the etag-less, last-write Set.
fn upsert(inner: &mut Inner, key: &str, value: &[u8]) -> Result<(), OpError> {
    let etag = uuid_v4(&mut inner.rng);
    inner
        .connection
        .prepare_cached(
            "INSERT OR REPLACE INTO state (key, value, is_binary, etag, update_time, expiration_time) \
             VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP, NULL)",
        )
        .map_err(failed)?
        .execute(params![key, BASE64.encode(value), true, etag])
        .map_err(failed)?;
    Ok(())
}

/// Preloads `items` in transactions of 10 000 upserts.
fn load(inner: &mut Inner, items: &[(String, Vec<u8>)]) -> Result<(), OpError> {
    for chunk in items.chunks(10_000) {
        inner
            .connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(failed)?;
        for (key, value) in chunk {
            upsert(inner, key, value)?;
        }
        inner.connection.execute_batch("COMMIT").map_err(failed)?;
    }
    Ok(())
}

/// The component's Get: the live row's value (base64-decoded when binary) and etag.
fn get_row(inner: &mut Inner, key: &str) -> Result<Option<Item>, OpError> {
    let row = inner
        .connection
        .prepare_cached(&format!(
            "SELECT key, value, is_binary, etag, expiration_time FROM state \
             WHERE key = ? AND {LIVE}"
        ))
        .map_err(failed)?
        .query_row([key], |row| {
            Ok((
                row.get::<_, String>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .optional()
        .map_err(failed)?;
    row.map(|(value, is_binary, etag)| Ok((decode(value, is_binary)?, etag)))
        .transpose()
}

/// One connection used synchronously from the calling thread, as an embedded application
/// uses SQLite (no async runtime in between): the one-thread comparison
/// (`examples/one_thread.rs`) calls the same statements as the harness's workers.
pub struct SqliteSync(Inner);

impl SqliteSync {
    pub fn connect(path: &Path, seed: u64) -> Result<SqliteSync, OpError> {
        Ok(SqliteSync(Inner {
            connection: open(path)?,
            rng: Rng::new(seed),
        }))
    }

    pub fn get(&mut self, key: &str) -> Result<Option<Item>, OpError> {
        get_row(&mut self.0, key)
    }

    /// The etag-less, last-write Set (durable: WAL with `synchronous = FULL`).
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<(), OpError> {
        upsert(&mut self.0, key, value)
    }

    pub fn load(&mut self, items: &[(String, Vec<u8>)]) -> Result<(), OpError> {
        load(&mut self.0, items)
    }
}

impl Client for SqliteClient {
    fn ping(&self) -> Fut<'_, ()> {
        // A library call: the floor is the hop to the blocking pool.
        Box::pin(self.run(|_| Ok(())))
    }

    fn get<'a>(&'a self, key: &'a str) -> Fut<'a, Option<Item>> {
        let key = key.to_string();
        Box::pin(self.run(move |inner| get_row(inner, &key)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        etag: Option<&'a str>,
        first_write: bool,
    ) -> Fut<'a, ()> {
        let (key, value, etag) = (key.to_string(), value.to_vec(), etag.map(str::to_string));
        Box::pin(self.run(move |inner| {
            let encoded = BASE64.encode(&value);
            let new_etag = uuid_v4(&mut inner.rng);
            let c = &inner.connection;
            match etag {
                Some(etag) => {
                    let rows = c
                        .prepare_cached(&format!(
                            "UPDATE state SET value = ?, etag = ?, is_binary = ?, \
                             update_time = CURRENT_TIMESTAMP, expiration_time = NULL \
                             WHERE key = ? AND etag = ? AND {LIVE}"
                        ))
                        .map_err(failed)?
                        .execute(params![encoded, new_etag, true, key, etag])
                        .map_err(failed)?;
                    if rows == 1 {
                        Ok(())
                    } else {
                        Err(OpError::Conflict)
                    }
                }
                None if first_write => {
                    let inserted = c
                        .prepare_cached(&format!(
                            "WITH a AS (SELECT ? AS key, ? AS value, ? AS is_binary, ? AS etag, \
                             CURRENT_TIMESTAMP AS update_time, NULL AS expiration_time \
                             WHERE NOT EXISTS (SELECT 1 FROM state WHERE key = ? AND {LIVE})) \
                             INSERT OR REPLACE INTO state \
                             (key, value, is_binary, etag, update_time, expiration_time) \
                             SELECT * FROM a RETURNING 1"
                        ))
                        .map_err(failed)?
                        .query_row(params![key, encoded, true, new_etag, key], |_| Ok(()))
                        .optional()
                        .map_err(failed)?;
                    inserted.ok_or(OpError::Conflict)
                }
                None => upsert(inner, &key, &value),
            }
        }))
    }

    fn bulk_get<'a>(&'a self, keys: &'a [String]) -> Fut<'a, usize> {
        let keys = keys.to_vec();
        Box::pin(self.run(move |inner| {
            let marks = vec!["?"; keys.len()].join(", ");
            let mut statement = inner
                .connection
                .prepare_cached(&format!(
                    "SELECT key, value, is_binary, etag, expiration_time FROM state \
                     WHERE key IN ({marks}) AND {LIVE}"
                ))
                .map_err(failed)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(keys.iter()))
                .map_err(failed)?;
            let mut found = 0;
            while let Some(row) = rows.next().map_err(failed)? {
                let value: String = row.get(1).map_err(failed)?;
                let is_binary: bool = row.get(2).map_err(failed)?;
                decode(value, is_binary)?;
                found += 1;
            }
            Ok(found)
        }))
    }

    fn transact<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        let items = items.to_vec();
        Box::pin(self.run(move |inner| {
            inner
                .connection
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(failed)?;
            let applied = items
                .iter()
                .try_for_each(|(key, value)| upsert(inner, key, value));
            match applied {
                Ok(()) => inner.connection.execute_batch("COMMIT").map_err(failed),
                Err(err) => {
                    let _ = inner.connection.execute_batch("ROLLBACK");
                    Err(err)
                }
            }
        }))
    }

    fn query_eq<'a>(&'a self, _: &'a str, _: bool) -> Fut<'a, usize> {
        Box::pin(async { Err(OpError::Failed("state.sqlite has no query API".into())) })
    }

    fn load<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        let items = items.to_vec();
        Box::pin(self.run(move |inner| load(inner, &items)))
    }

    fn load_documents<'a>(&'a self, items: &'a [(String, Vec<u8>)]) -> Fut<'a, ()> {
        self.load(items)
    }
}

/// The database file of a SQLite target in `dir`.
pub fn database_path(dir: &Path) -> PathBuf {
    dir.join("state.db")
}
