//! Roost's admin service on the component socket (`roost.admin.v1.Admin`): scan, stats,
//! snapshots, and single-record get, set and query of the instance named by
//! `x-component-instance`, while the server keeps serving. [`super::online`] is its client.

use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::instances::InstanceRegistry;
use crate::proto::admin;
use crate::status;

/// Records per scan page when the caller asks for 0 (or more).
const MAX_SCAN_PAGE: usize = 1000;
/// Bytes per snapshot chunk (well under daprd's and tonic's 4 MiB message limits).
const CHUNK: usize = 1 << 20;

/// Removes the temporary snapshot file when the stream ends or the client goes away.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The stream of a snapshot's chunks.
pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<admin::SnapshotChunk, Status>> + Send>>;

pub async fn scan(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::ScanRequest>,
) -> Result<Response<admin::ScanResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let r = request.into_inner();
    let limit = match r.limit as usize {
        0 => MAX_SCAN_PAGE,
        n => n.min(MAX_SCAN_PAGE),
    };
    let db = instance.db.blocking().clone();
    let after = (!r.after.is_empty()).then(|| r.after.to_vec());
    let page = tokio::task::spawn_blocking(move || db.scan(r.prefix, after.as_deref(), limit))
        .await
        .map_err(status::server_error)?
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(admin::ScanResponse {
        records: page
            .records
            .into_iter()
            .map(|(key, record)| scan_record(key, record))
            .collect(),
        next: page.next.map(Bytes::from).unwrap_or_default(),
    }))
}

pub async fn stats(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::StatsRequest>,
) -> Result<Response<admin::StatsResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let db = instance.db.blocking().clone();
    let data_dir = registry.data_dir().to_path_buf();
    let name = instance.name.clone();
    let json = tokio::task::spawn_blocking(move || super::offline::stats(&db, &data_dir, &name))
        .await
        .map_err(status::server_error)?
        .map_err(status::server_error)?;
    Ok(Response::new(admin::StatsResponse {
        json: json.to_string(),
    }))
}

pub async fn get(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::GetRequest>,
) -> Result<Response<admin::GetResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let key = request.into_inner().key.to_vec();
    let found = instance
        .db
        .get(key.clone())
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(admin::GetResponse {
        record: found.map(|record| scan_record(key, record)),
    }))
}

pub async fn set(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::SetRequest>,
) -> Result<Response<admin::SetResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let r = request.into_inner();
    let mut write = roost_engine::SetRequest::new(r.key.to_vec(), r.value.to_vec());
    write.etag = r.etag;
    write.ttl_in_seconds = r.ttl_in_seconds;
    write.content_type = r.content_type;
    let etag = instance
        .db
        .set(write)
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(admin::SetResponse {
        etag: etag.to_string(),
    }))
}

pub async fn query(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::QueryRequest>,
) -> Result<Response<admin::QueryResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let query = roost_engine::Query::parse_json(&request.into_inner().query)
        .map_err(|e| status::from_engine(&e))?;
    let page = instance
        .db
        .query(query)
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(admin::QueryResponse {
        rows: page
            .rows
            .into_iter()
            .map(|row| admin::QueryRow {
                key: Bytes::from(row.key),
                value: Bytes::from(row.value),
                etag: row.etag.to_string(),
            })
            .collect(),
        token: page.token.unwrap_or_default(),
    }))
}

pub async fn snapshot(
    registry: &Arc<InstanceRegistry>,
    request: Request<admin::SnapshotRequest>,
) -> Result<Response<SnapshotStream>, Status> {
    let instance = registry.resolve(&request).await?;
    let dir = registry.instance_dir(&instance.name)?;
    let temp = TempFile(dir.join(format!("snapshot-{}.roost.tmp", roost_engine::uuid_v4())));
    let db = instance.db.blocking().clone();
    let path = temp.0.clone();
    let stats = tokio::task::spawn_blocking(move || db.snapshot_to(&path))
        .await
        .map_err(status::server_error)?
        .map_err(|e| status::from_engine(&e))?;
    let mut file = tokio::fs::File::open(&temp.0)
        .await
        .map_err(|e| status::server_error(format!("reading the snapshot: {e}")))?;
    let stream = async_stream_chunks(move |tx| async move {
        let _temp = temp;
        let mut first = true;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(status::server_error(format!(
                            "reading the snapshot: {e}"
                        ))))
                        .await;
                    return;
                }
            };
            if n == 0 && !first {
                return;
            }
            buf.truncate(n);
            let chunk = admin::SnapshotChunk {
                data: Bytes::from(buf),
                records: if first { stats.records } else { 0 },
                total_bytes: if first { stats.bytes } else { 0 },
            };
            first = false;
            if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                return;
            }
        }
    });
    Ok(Response::new(stream))
}

/// A record as the admin service returns it.
fn scan_record(key: Vec<u8>, record: roost_engine::Record) -> admin::ScanRecord {
    admin::ScanRecord {
        key: Bytes::from(key),
        value: Bytes::from(record.value),
        etag: record.etag.to_string(),
        expires_at_unix_ms: record.expires_at_unix_ms.unwrap_or(0),
        content_type: record.content_type.unwrap_or_default(),
    }
}

/// A stream fed by a task through a small channel (backpressure: at most 2 chunks ahead).
fn async_stream_chunks<F, Fut>(produce: F) -> SnapshotStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<admin::SnapshotChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
