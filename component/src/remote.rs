//! Online administration: the admin commands talking to a running `roost serve` through its
//! socket (`--socket`), as daprd does — `x-component-instance` names the keyspace. `get`,
//! `set`, `delete` and `query` use the Dapr state services; `scan`, `stats` and `backup` use
//! Roost's admin service (`proto/roost/admin/v1/admin.proto`).

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::client;
use crate::proto::admin::{self, admin_client::AdminClient};
use crate::proto::{
    self, queriable_state_store_client::QueriableStateStoreClient,
    state_store_client::StateStoreClient,
};

/// One instance of a running server.
pub struct Remote {
    channel: Channel,
    instance: String,
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> String + '_ {
    move |status| format!("{what} failed: {:?}: {}", status.code(), status.message())
}

impl Remote {
    pub async fn connect(socket: &Path, instance: &str) -> Result<Remote, String> {
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

    /// The value and etag of `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<proto::GetResponse>, String> {
        let response = StateStoreClient::new(self.channel.clone())
            .get(self.request(proto::GetRequest {
                key: key.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(failed("Get"))?
            .into_inner();
        Ok((response.etag.is_some() || !response.data.is_empty()).then_some(response))
    }

    pub async fn set(&self, request: proto::SetRequest) -> Result<(), String> {
        StateStoreClient::new(self.channel.clone())
            .set(self.request(request))
            .await
            .map_err(failed("Set"))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str, etag: Option<String>) -> Result<(), String> {
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

    /// Runs a state query (`{"filter":…,"sort":…,"page":…}`) exactly as daprd would send it.
    pub async fn query(&self, query_json: &str) -> Result<proto::QueryResponse, String> {
        let query = crate::sidecar::api::parse_query(query_json.as_bytes())
            .map_err(|e| format!("invalid query: {e}"))?;
        Ok(QueriableStateStoreClient::new(self.channel.clone())
            .query(self.request(proto::QueryRequest {
                query: Some(query),
                metadata: Default::default(),
            }))
            .await
            .map_err(failed("Query"))?
            .into_inner())
    }

    /// Calls `each` for up to `limit` records (0 = all) whose key starts with `prefix`;
    /// returns whether more records follow.
    pub async fn scan(
        &self,
        prefix: &str,
        limit: usize,
        mut each: impl FnMut(admin::ScanRecord) -> Result<(), String>,
    ) -> Result<bool, String> {
        let mut client = AdminClient::new(self.channel.clone());
        let mut after = bytes::Bytes::new();
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
            for record in page.records {
                seen += 1;
                each(record)?;
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

    pub async fn stats(&self) -> Result<serde_json::Value, String> {
        let response = AdminClient::new(self.channel.clone())
            .stats(self.request(admin::StatsRequest {}))
            .await
            .map_err(failed("Stats"))?
            .into_inner();
        serde_json::from_str(&response.json).map_err(|e| e.to_string())
    }

    /// Streams a snapshot of the keyspace into the new file `out`; `progress(received, total)`
    /// is called per chunk. Returns (records, bytes). A partial file is removed on failure.
    pub async fn backup(
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
