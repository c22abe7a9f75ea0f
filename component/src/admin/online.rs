//! Online administration: the [`Keyspace`] commands talking to a running `roost serve`
//! through its socket (`--socket`), as daprd does — `x-component-instance` names the keyspace.
//! `delete` uses the Dapr state service; everything else Roost's admin service
//! (`proto/roost/admin/v1/admin.proto`, [`super::service`]), whose records carry what the
//! engine keeps (expiry in milliseconds, content type) and whose `Set` returns the etag of the
//! write itself.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use super::output::Progress;
use super::{Keyspace, QueryPage, Record, Row, Write};
use crate::doctor::client;
use crate::proto::admin::{self, admin_client::AdminClient};
use crate::proto::{self, state_store_client::StateStoreClient};

/// One instance of a running server, with the runtime the calls run on.
pub struct Online {
    runtime: tokio::runtime::Runtime,
    remote: Remote,
}

impl Online {
    pub fn connect(socket: &Path, instance: &str) -> Result<Online, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let remote = runtime.block_on(Remote::connect(socket, instance))?;
        Ok(Online { runtime, remote })
    }
}

impl Keyspace for Online {
    fn get(&mut self, key: &str) -> Result<Option<Record>, String> {
        self.runtime.block_on(self.remote.get(key))
    }

    fn set(&mut self, write: Write) -> Result<String, String> {
        self.runtime.block_on(self.remote.set(write))
    }

    fn delete(&mut self, key: &str, etag: Option<String>) -> Result<(), String> {
        self.runtime.block_on(self.remote.delete(key, etag))
    }

    fn scan(
        &mut self,
        prefix: &str,
        limit: usize,
        each: &mut dyn FnMut(Record) -> Result<(), String>,
    ) -> Result<bool, String> {
        self.runtime.block_on(self.remote.scan(prefix, limit, each))
    }

    fn query(&mut self, query_json: &str) -> Result<QueryPage, String> {
        self.runtime.block_on(self.remote.query(query_json))
    }

    fn stats(&mut self) -> Result<serde_json::Value, String> {
        self.runtime.block_on(self.remote.stats())
    }

    fn backup(&mut self, out: &Path) -> Result<(u64, u64), String> {
        let mut progress: Option<Progress> = None;
        let result = self
            .runtime
            .block_on(self.remote.backup(out, |received, total| {
                progress
                    .get_or_insert_with(|| Progress::new("backup", "bytes", total))
                    .set(received);
            }));
        if let (Ok((records, bytes)), Some(progress)) = (&result, progress) {
            progress.finish(&format!("{records} records, {bytes} bytes"));
        }
        result
    }
}

fn record(found: admin::ScanRecord) -> Record {
    Record {
        key: found.key.to_vec(),
        value: found.value.to_vec(),
        etag: found.etag,
        expires_at_unix_ms: (found.expires_at_unix_ms != 0).then_some(found.expires_at_unix_ms),
        content_type: (!found.content_type.is_empty()).then_some(found.content_type),
    }
}

/// The calls, on one channel to the socket.
struct Remote {
    channel: Channel,
    instance: String,
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |status| format!("{what} failed: {:?}: {}", status.code(), status.message())
}

impl Remote {
    async fn connect(socket: &Path, instance: &str) -> Result<Remote, String> {
        let channel = client::connect(socket, Duration::from_secs(5))
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {} ({e}): is `roost serve` running there?",
                    socket.display()
                )
            })?;
        Ok(Remote {
            channel,
            instance: instance.to_string(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        client::for_instance(&self.instance, message)
    }

    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, String> {
        let response = self
            .admin()
            .get(self.request(admin::GetRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
            }))
            .await
            .map_err(failed("Get"))?
            .into_inner();
        Ok(response.record.map(record))
    }

    async fn set(&self, write: Write) -> Result<String, String> {
        let response = self
            .admin()
            .set(self.request(admin::SetRequest {
                key: Bytes::from(write.key.into_bytes()),
                value: Bytes::from(write.value),
                etag: write.etag,
                ttl_in_seconds: write.ttl_in_seconds,
                content_type: write.content_type,
            }))
            .await
            .map_err(failed("Set"))?
            .into_inner();
        Ok(response.etag)
    }

    async fn delete(&self, key: &str, etag: Option<String>) -> Result<(), String> {
        StateStoreClient::new(self.channel.clone())
            .delete(self.request(proto::DeleteRequest {
                key: key.to_string(),
                etag: etag.map(|value| proto::Etag { value }),
                ..Default::default()
            }))
            .await
            .map_err(failed("Delete"))?;
        Ok(())
    }

    async fn query(&self, query_json: &str) -> Result<QueryPage, String> {
        let response = self
            .admin()
            .query(self.request(admin::QueryRequest {
                query: query_json.to_string(),
            }))
            .await
            .map_err(failed("Query"))?
            .into_inner();
        Ok(QueryPage {
            rows: response
                .rows
                .into_iter()
                .map(|row| Row {
                    key: String::from_utf8_lossy(&row.key).into_owned(),
                    value: row.value.to_vec(),
                    etag: row.etag,
                })
                .collect(),
            token: (!response.token.is_empty()).then_some(response.token),
        })
    }

    async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        each: &mut dyn FnMut(Record) -> Result<(), String>,
    ) -> Result<bool, String> {
        let mut client = self.admin();
        let mut after = Bytes::new();
        let mut seen = 0usize;
        loop {
            let want = if limit == 0 { 0 } else { (limit - seen) as u32 };
            let page = client
                .scan(self.request(admin::ScanRequest {
                    prefix: prefix.to_string(),
                    after: after.clone(),
                    limit: want,
                }))
                .await
                .map_err(failed("Scan"))?
                .into_inner();
            for found in page.records {
                seen += 1;
                each(record(found))?;
            }
            if page.next.is_empty() {
                return Ok(false);
            }
            if limit != 0 && seen >= limit {
                return Ok(true);
            }
            after = page.next;
        }
    }

    async fn stats(&self) -> Result<serde_json::Value, String> {
        let response = self
            .admin()
            .stats(self.request(admin::StatsRequest {}))
            .await
            .map_err(failed("Stats"))?
            .into_inner();
        serde_json::from_str(&response.json).map_err(|e| e.to_string())
    }

    /// Streams a snapshot of the keyspace into the new file `out`; `progress(received, total)`
    /// is called per chunk. Returns (records, bytes). A partial file is removed on failure.
    async fn backup(
        &self,
        out: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(u64, u64), String> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
            .await
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let result = async {
            let mut stream = AdminClient::new(self.channel.clone())
                .max_decoding_message_size(8 << 20)
                .snapshot(self.request(admin::SnapshotRequest {}))
                .await
                .map_err(failed("Snapshot"))?
                .into_inner();
            let (mut records, mut total, mut received) = (0, 0, 0u64);
            while let Some(chunk) = stream.message().await.map_err(failed("Snapshot"))? {
                if received == 0 && chunk.total_bytes > 0 {
                    records = chunk.records;
                    total = chunk.total_bytes;
                }
                file.write_all(&chunk.data)
                    .await
                    .map_err(|e| format!("writing {}: {e}", out.display()))?;
                received += chunk.data.len() as u64;
                progress(received, total);
            }
            if received != total {
                return Err(format!(
                    "the snapshot ended after {received} of {total} bytes"
                ));
            }
            file.sync_all().await.map_err(|e| e.to_string())?;
            Ok((records, total))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(out).await;
        }
        result
    }
}
