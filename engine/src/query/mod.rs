//! The Dapr state query language: filters over JSON values, multi-key sort, keyset pages,
//! and secondary indexes on declared paths. See `docs/query.md` for the rules.
//!
//! - [`parse`]: the two input forms (daprd's operator map, plain JSON);
//! - [`value`]: dot paths, typed comparison, sort order, index value encoding;
//! - [`index`]: index entries, kept in the record's write transaction, built on declaration;
//! - [`plan`]: choosing an index or a scan, and producing one page.

pub(crate) mod index;
pub(crate) mod parse;
pub(crate) mod plan;
pub(crate) mod project;
pub(crate) mod value;

use serde_json::Value;

use crate::error::Error;
use crate::etag::Etag;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A filter tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Filter {
    /// No filter: every JSON record matches.
    #[default]
    All,
    Cmp {
        op: CmpOp,
        path: Vec<String>,
        literal: Value,
    },
    In {
        path: Vec<String>,
        values: Vec<Value>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// Parses daprd's form: one operator name and its operand as JSON text.
    pub fn from_operator(operator: &str, operand_json: &[u8]) -> Result<Filter, Error> {
        let operand: Value = serde_json::from_slice(operand_json).map_err(|e| {
            Error::InvalidQuery(format!(
                "the {operator} filter operand is not valid JSON: {e}"
            ))
        })?;
        parse::operator_filter(operator, &operand, 0)
    }

    /// Whether a JSON document matches.
    pub(crate) fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::All => true,
            Filter::Cmp { op, path, literal } => {
                let Some(field) = value::lookup(doc, path) else {
                    return false;
                };
                let Some(ordering) = value::compare(field, literal) else {
                    return false;
                };
                let ordered = || value::ordered(field, literal);
                match op {
                    CmpOp::Eq => ordering.is_eq(),
                    CmpOp::Neq => ordering.is_ne(),
                    CmpOp::Gt => ordered() && ordering.is_gt(),
                    CmpOp::Gte => ordered() && ordering.is_ge(),
                    CmpOp::Lt => ordered() && ordering.is_lt(),
                    CmpOp::Lte => ordered() && ordering.is_le(),
                }
            }
            Filter::In { path, values } => value::lookup(doc, path).is_some_and(|field| {
                values
                    .iter()
                    .any(|v| value::compare(field, v).is_some_and(|o| o.is_eq()))
            }),
            Filter::And(children) => children.iter().all(|c| c.matches(doc)),
            Filter::Or(children) => children.iter().any(|c| c.matches(doc)),
        }
    }
}

/// One sort key: a dot path and a direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub path: String,
    pub(crate) segments: Vec<String>,
    pub descending: bool,
}

impl SortKey {
    pub fn new(path: &str, descending: bool) -> Result<SortKey, Error> {
        Ok(SortKey {
            segments: parse::parse_path(path)?,
            path: path.to_owned(),
            descending,
        })
    }
}

/// A query: filter, sort, page size and position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub filter: Filter,
    pub sort: Vec<SortKey>,
    /// Rows per page; 0 = no limit (still cut by `max_response_bytes`).
    pub limit: usize,
    /// The token of the previous page, if continuing.
    pub token: Option<String>,
    /// Cut the page (and return a token) before its rows exceed this many bytes; 0 = no cut.
    pub max_response_bytes: usize,
    /// Ignore indexes (for checking that indexed and full-scan answers agree).
    pub force_full_scan: bool,
}

impl Query {
    /// Parses the JSON form `{"filter": {...}, "sort": [...], "page": {"limit", "token"}}`.
    pub fn parse_json(text: impl AsRef<[u8]>) -> Result<Query, Error> {
        parse::json_query(text.as_ref())
    }
}

/// One row of a query result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRow {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub etag: Etag,
    pub content_type: Option<String>,
}

/// One page of results and the token for the next page (`None` when there is no more).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryPage {
    pub rows: Vec<QueryRow>,
    pub token: Option<String>,
}

/// Keyset tokens: the sort values and key of the last row of a page, so the next page starts
/// strictly after it, whatever was inserted or deleted in between.
pub(crate) mod token {
    use serde_json::{Value, json};

    use crate::error::Error;

    const PREFIX: &str = "r1.";

    pub fn encode(sort_values: &[Option<Value>], key: &[u8]) -> String {
        let values: Vec<Value> = sort_values
            .iter()
            .map(|v| match v {
                Some(v) => json!([1, v]),
                None => json!([0]),
            })
            .collect();
        let body = json!({"v": values, "k": hex(key)}).to_string();
        format!("{PREFIX}{}", hex(body.as_bytes()))
    }

    pub fn decode(token: &str, sort_keys: usize) -> Result<(Vec<Option<Value>>, Vec<u8>), Error> {
        let bad =
            || Error::InvalidQuery("the page token is not one Roost issued for this query".into());
        let body = token.strip_prefix(PREFIX).and_then(unhex).ok_or_else(bad)?;
        let body: Value = serde_json::from_slice(&body).map_err(|_| bad())?;
        let key = body
            .get("k")
            .and_then(Value::as_str)
            .and_then(unhex)
            .ok_or_else(bad)?;
        let values = body.get("v").and_then(Value::as_array).ok_or_else(bad)?;
        if values.len() != sort_keys {
            return Err(bad());
        }
        let values = values
            .iter()
            .map(|v| match v.as_array().map(Vec::as_slice) {
                Some([flag, value]) if flag == 1 => Ok(Some(value.clone())),
                Some([flag]) if flag == 0 => Ok(None),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?;
        Ok((values, key))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(text: &str) -> Result<Query, Error> {
        Query::parse_json(text)
    }

    #[test]
    fn parse_errors_name_the_offending_part() {
        for (text, needle) in [
            (r#"{"filter":{"EQ":{"a":1,"b":2}}}"#, "single key/value"),
            (r#"{"filter":{"AND":[{"EQ":{"a":1}}]}}"#, "at least two"),
            (r#"{"filter":{"OR":{"EQ":{"a":1}}}}"#, "array"),
            (r#"{"filter":{"IN":{"a":1}}}"#, "IN filter value"),
            (
                r#"{"filter":{"LIKE":{"a":1}}}"#,
                "unsupported filter \"LIKE\"",
            ),
            (
                r#"{"filter":{"EQ":{"a":1},"NEQ":{"a":2}}}"#,
                "exactly one operator",
            ),
            (r#"{"filter":{"EQ":{"a..b":1}}}"#, "dot path"),
            (r#"{"sort":[{"key":"a","order":"desc"}]}"#, "ASC"),
            (r#"{"page":{"limit":-1}}"#, "limit"),
            (r#"{"filters":{}}"#, "unknown query member"),
            ("not json", "not valid JSON"),
        ] {
            let err = q(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let deep = (0..40).fold(r#"{"EQ":{"a":1}}"#.to_string(), |inner, _| {
            format!(r#"{{"AND":[{inner},{{"EQ":{{"b":2}}}}]}}"#)
        });
        let err = q(&format!(r#"{{"filter":{deep}}}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn evaluation_rules() {
        let doc = json!({"n": 15, "s": "b", "t": true, "z": null, "o": {"v": 9}});
        let matches = |f: &str| {
            q(&format!(r#"{{"filter":{f}}}"#))
                .unwrap()
                .filter
                .matches(&doc)
        };
        assert!(matches(r#"{"EQ":{"n":15.0}}"#));
        assert!(matches(r#"{"LT":{"o.v":10}}"#));
        assert!(!matches(r#"{"EQ":{"n":"15"}}"#), "types never mix");
        assert!(
            !matches(r#"{"NEQ":{"missing":1}}"#),
            "missing matches no comparison"
        );
        assert!(
            !matches(r#"{"NEQ":{"n":"x"}}"#),
            "NEQ across types does not match"
        );
        assert!(matches(r#"{"NEQ":{"n":16}}"#));
        assert!(matches(r#"{"GT":{"s":"a"}}"#));
        assert!(
            !matches(r#"{"GT":{"t":false}}"#),
            "booleans only by equality"
        );
        assert!(matches(r#"{"EQ":{"z":null}}"#));
        assert!(matches(r#"{"IN":{"s":["a","b"]}}"#));
        assert!(!matches(r#"{"IN":{"s":[]}}"#));
        assert!(matches(
            r#"{"OR":[{"EQ":{"n":1}},{"AND":[{"GTE":{"n":10}},{"LT":{"n":20}}]}]}"#
        ));
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = token::encode(&[Some(json!(3)), None], b"k\x00y");
        let (values, key) = token::decode(&t, 2).unwrap();
        assert_eq!(values, vec![Some(json!(3)), None]);
        assert_eq!(key, b"k\x00y");
        assert!(token::decode(&t, 1).is_err());
        assert!(token::decode("10", 0).is_err());
        assert!(token::decode("r1.zz", 0).is_err());
    }
}
