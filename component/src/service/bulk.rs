//! BulkGet, BulkSet, BulkDelete.
//!
//! Bulk get answers one item per requested key, in request order, echoing the keys as
//! received, from one snapshot. Bulk set / delete apply every item they can in one group
//! commit; the protocol has one status for the whole call, so when items fail the call fails
//! with the first failing item's error (an ETag error in the shape daprd decodes), and says
//! how many failed, while the other items stay applied.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::config::DAPRD_MAX_RESPONSE_BYTES;
use crate::instances::InstanceRegistry;
use crate::proto;
use crate::service::convert;
use crate::status;

pub async fn bulk_get(
    registry: &Arc<InstanceRegistry>,
    request: Request<convert::BulkGetKeys>,
) -> Result<Response<convert::BulkGetAnswer>, Status> {
    let instance = registry.resolve(&request).await?;
    // The keys are slices of the request message (`BulkGetKeys`); each record is encoded
    // into the answer as the engine reads it, its value copied once, there.
    let keys = request.into_inner().keys;
    let answer = convert::BulkGetAnswer::with_room(&keys, DAPRD_MAX_RESPONSE_BYTES);
    let answer = instance
        .db
        .bulk_get_each(keys, answer, |answer, key, record| answer.push(key, record))
        .await
        .map_err(|e| status::from_engine(&e))?;
    Ok(Response::new(answer))
}

pub async fn bulk_set(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::BulkSetRequest>,
) -> Result<Response<proto::BulkSetResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let requests = request
        .into_inner()
        .items
        .into_iter()
        .map(convert::set_request)
        .collect();
    let results = instance
        .db
        .bulk_set(requests)
        .await
        .map_err(|e| status::from_engine(&e))?;
    first_failure(results.iter().map(|r| r.as_ref().err()))?;
    Ok(Response::new(proto::BulkSetResponse {}))
}

pub async fn bulk_delete(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::BulkDeleteRequest>,
) -> Result<Response<proto::BulkDeleteResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let requests = request
        .into_inner()
        .items
        .into_iter()
        .map(convert::delete_request)
        .collect();
    let results = instance
        .db
        .bulk_delete(requests)
        .await
        .map_err(|e| status::from_engine(&e))?;
    first_failure(results.iter().map(|r| r.as_ref().err()))?;
    Ok(Response::new(proto::BulkDeleteResponse {}))
}

/// The status of the first failed item, its message saying how many items failed.
fn first_failure<'a>(
    errors: impl Iterator<Item = Option<&'a roost_engine::Error>>,
) -> Result<(), Status> {
    let failed: Vec<&roost_engine::Error> = errors.flatten().collect();
    let Some(first) = failed.first() else {
        return Ok(());
    };
    if failed.len() == 1 {
        return Err(status::from_engine(first));
    }
    // Same code and details shape, with the count in the message.
    Err(status::with_message(
        first,
        format!(
            "{} items failed (the others were applied); first: {first}",
            failed.len()
        ),
    ))
}
