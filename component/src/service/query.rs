//! Query: daprd's `QueryRequest` → engine query → one page of `QueryItem`s.
//!
//! daprd sends the filter as a map of one operator name to a `google.protobuf.Any` whose
//! `value` is the operand's JSON text (its type URL is empty and is ignored). Pages never
//! exceed what daprd can receive: a page is cut below 4 MiB and a token returned, whatever the
//! limit. Request metadata such as `queryIndexName` or `contentType` is accepted and not
//! needed: the planner picks an index by itself.

use std::sync::Arc;

use roost_engine::{Filter, Query, SortKey};
use tonic::{Request, Response, Status};

use crate::config::DAPRD_MAX_RESPONSE_BYTES;
use crate::instances::InstanceRegistry;
use crate::proto::{self, sorting::Order};
use crate::status;

/// Room left in a response for the envelope of the rows (keys, etags, framing).
const RESPONSE_SLACK_BYTES: usize = 256 * 1024;

pub async fn query(
    registry: &Arc<InstanceRegistry>,
    request: Request<proto::QueryRequest>,
) -> Result<Response<proto::QueryResponse>, Status> {
    let instance = registry.resolve(&request).await?;
    let wire = request.into_inner().query.unwrap_or_default();
    let query = to_engine(wire)?;
    let page = instance
        .db
        .query(query)
        .await
        .map_err(|e| status::from_engine(&e))?;
    let response = proto::QueryResponse {
        items: page
            .rows
            .into_iter()
            .map(|row| proto::QueryItem {
                key: String::from_utf8_lossy(&row.key).into_owned(),
                data: row.value,
                etag: Some(proto::Etag {
                    value: row.etag.to_decimal(),
                }),
                error: String::new(),
                content_type: row.content_type.unwrap_or_default(),
            })
            .collect(),
        token: page.token.unwrap_or_default(),
        metadata: Default::default(),
    };
    Ok(Response::new(response))
}

fn to_engine(wire: proto::Query) -> Result<Query, Status> {
    if wire.filter.len() > 1 {
        let mut names: Vec<&String> = wire.filter.keys().collect();
        names.sort();
        return Err(status::bad_request(format!(
            "the query filter must have one top-level operator, got {names:?}"
        )));
    }
    let filter = match wire.filter.into_iter().next() {
        None => Filter::All,
        Some((operator, operand)) => {
            Filter::from_operator(&operator, &operand.value).map_err(|e| status::from_engine(&e))?
        }
    };
    let sort = wire
        .sort
        .iter()
        .map(|s| SortKey::new(&s.key, s.order() == Order::Desc))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| status::from_engine(&e))?;
    let pagination = wire.pagination.unwrap_or_default();
    let limit = usize::try_from(pagination.limit)
        .map_err(|_| status::bad_request(format!("page limit {} is negative", pagination.limit)))?;
    Ok(Query {
        filter,
        sort,
        limit,
        token: (!pagination.token.is_empty()).then_some(pagination.token),
        max_response_bytes: DAPRD_MAX_RESPONSE_BYTES - RESPONSE_SLACK_BYTES,
        force_full_scan: false,
    })
}
