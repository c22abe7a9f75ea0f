//! Parsing the Dapr state query language, in both forms it arrives in:
//! - daprd's: `Query.filter` is a map with one operator name → `google.protobuf.Any` whose
//!   `value` is the operator's operand as JSON text (and an empty type URL);
//! - plain JSON for embedded users: `{"filter": {...}, "sort": [...], "page": {...}}`.
//!
//! Validation follows Dapr's parser: one operator per filter node; `EQ NEQ GT GTE LT LTE`
//! take an object with exactly one `"path": value`; `IN` takes `"path": [values]`; `AND`/`OR`
//! take an array of at least two filters. Every error names the offending part.

use serde_json::{Map, Value};

use crate::error::Error;
use crate::query::{CmpOp, Filter, Query, SortKey};

/// Deepest filter nesting accepted (AND/OR inside AND/OR ...).
pub const MAX_FILTER_DEPTH: usize = 32;
/// Longest dot path accepted, in segments.
const MAX_PATH_SEGMENTS: usize = 32;

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidQuery(message.into())
}

/// Parses one filter node: a JSON object with exactly one operator.
pub(crate) fn filter(node: &Value, depth: usize) -> Result<Filter, Error> {
    let object = node.as_object().ok_or_else(|| {
        invalid(format!(
            "a filter must be an object with one operator, got {}",
            short(node)
        ))
    })?;
    if object.len() != 1 {
        return Err(invalid(format!(
            "a filter must have exactly one operator, got {} ({})",
            object.len(),
            object.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let (operator, operand) = object.iter().next().expect("one entry");
    operator_filter(operator, operand, depth)
}

/// Parses `operator: operand` (the form daprd sends, and each node of the JSON form).
pub(crate) fn operator_filter(
    operator: &str,
    operand: &Value,
    depth: usize,
) -> Result<Filter, Error> {
    if depth > MAX_FILTER_DEPTH {
        return Err(invalid(format!(
            "the filter is nested deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    let op = match operator {
        "EQ" => CmpOp::Eq,
        "NEQ" => CmpOp::Neq,
        "GT" => CmpOp::Gt,
        "GTE" => CmpOp::Gte,
        "LT" => CmpOp::Lt,
        "LTE" => CmpOp::Lte,
        "IN" => {
            let (path, value) = single_pair(operator, operand)?;
            let values = value
                .as_array()
                .ok_or_else(|| invalid(format!("IN filter value for {path:?} must be an array")))?;
            return Ok(Filter::In {
                path: parse_path(path)?,
                values: values.clone(),
            });
        }
        "AND" | "OR" => {
            let entries = operand
                .as_array()
                .ok_or_else(|| invalid(format!("{operator} filter must be an array of filters")))?;
            if entries.len() < 2 {
                return Err(invalid(format!(
                    "{operator} filter must contain at least two entries, got {}",
                    entries.len()
                )));
            }
            let children = entries
                .iter()
                .map(|child| filter(child, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if operator == "AND" {
                Filter::And(children)
            } else {
                Filter::Or(children)
            });
        }
        other => {
            return Err(invalid(format!(
                "unsupported filter {other:?} (use EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR)"
            )));
        }
    };
    let (path, value) = single_pair(operator, operand)?;
    Ok(Filter::Cmp {
        op,
        path: parse_path(path)?,
        literal: value.clone(),
    })
}

fn single_pair<'v>(operator: &str, operand: &'v Value) -> Result<(&'v String, &'v Value), Error> {
    let object: &Map<String, Value> = operand.as_object().ok_or_else(|| {
        invalid(format!(
            "{operator} filter must be a map of one path to a value"
        ))
    })?;
    if object.len() != 1 {
        return Err(invalid(format!(
            "{operator} filter must contain a single key/value pair, got {}",
            object.len()
        )));
    }
    Ok(object.iter().next().expect("one entry"))
}

/// Splits a dot path; empty paths and empty segments are errors.
pub(crate) fn parse_path(path: &str) -> Result<Vec<String>, Error> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if path.is_empty() || segments.iter().any(String::is_empty) {
        return Err(invalid(format!(
            "{path:?} is not a dot path like \"person.org\""
        )));
    }
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(invalid(format!(
            "{path:?} has more than {MAX_PATH_SEGMENTS} segments"
        )));
    }
    Ok(segments)
}

/// Parses the plain JSON form: `{"filter": {...}, "sort": [{"key", "order"}], "page": {"limit", "token"}}`.
pub(crate) fn json_query(text: &[u8]) -> Result<Query, Error> {
    let root: Value = serde_json::from_slice(text)
        .map_err(|e| invalid(format!("the query is not valid JSON: {e}")))?;
    let object = root
        .as_object()
        .ok_or_else(|| invalid("the query must be a JSON object"))?;
    let mut query = Query::default();
    for (member, value) in object {
        match member.as_str() {
            "filter" => {
                let is_empty = value.is_null() || value.as_object().is_some_and(Map::is_empty);
                if !is_empty {
                    query.filter = filter(value, 0)?;
                }
            }
            "sort" => {
                let entries = value
                    .as_array()
                    .ok_or_else(|| invalid("sort must be an array of {\"key\", \"order\"}"))?;
                for entry in entries {
                    let key = entry.get("key").and_then(Value::as_str).ok_or_else(|| {
                        invalid(format!("sort entry {} has no string \"key\"", short(entry)))
                    })?;
                    let descending = match entry.get("order").map(|o| o.as_str()) {
                        None | Some(Some("ASC")) => false,
                        Some(Some("DESC")) => true,
                        Some(other) => {
                            return Err(invalid(format!(
                                "sort order of {key:?} must be \"ASC\" or \"DESC\", got {}",
                                other.map_or_else(
                                    || "a non-string".to_string(),
                                    |o| format!("{o:?}")
                                )
                            )));
                        }
                    };
                    query.sort.push(SortKey::new(key, descending)?);
                }
            }
            "page" => {
                let page = value
                    .as_object()
                    .ok_or_else(|| invalid("page must be an object {\"limit\", \"token\"}"))?;
                for (field, v) in page {
                    match field.as_str() {
                        "limit" => {
                            query.limit = v.as_u64().ok_or_else(|| {
                                invalid("page.limit must be a non-negative integer")
                            })? as usize;
                        }
                        "token" => {
                            let token = v
                                .as_str()
                                .ok_or_else(|| invalid("page.token must be a string"))?;
                            query.token = (!token.is_empty()).then(|| token.to_owned());
                        }
                        other => return Err(invalid(format!("unknown page member {other:?}"))),
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown query member {other:?} (use filter, sort and page)"
                )));
            }
        }
    }
    Ok(query)
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}…", &text[..text.floor_char_boundary(80)])
    } else {
        text
    }
}
