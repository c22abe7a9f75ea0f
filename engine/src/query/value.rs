//! JSON values as the query language sees them: dot-path lookup, the typed comparison rules,
//! the total sort order, and the order-preserving byte encoding used by secondary indexes.
//!
//! Rules (documented in `docs/query.md`):
//! - numbers compare as IEEE-754 doubles, as Dapr's Go runtime reads JSON (so `15 == 15.0`,
//!   `9 < 10`; integers beyond 2^53 compare by their nearest double);
//! - strings compare by UTF-8 bytes (code point order); booleans and null only by equality;
//!   values of different types never match, and a missing field matches no comparison;
//! - the sort order ranks types: numbers < strings < booleans (false < true) < null <
//!   arrays/objects (all equal to each other), and a missing field sorts last in both
//!   directions; `DESC` reverses everything but the place of missing fields.

use std::cmp::Ordering;

use serde_json::Value;

/// Type ranks of the sort order, also the first byte of an index entry's value.
pub(crate) const TAG_NUMBER: u8 = 1;
pub(crate) const TAG_STRING: u8 = 2;
pub(crate) const TAG_BOOL: u8 = 3;
pub(crate) const TAG_NULL: u8 = 4;
pub(crate) const TAG_OTHER: u8 = 5;
pub(crate) const TAG_MISSING: u8 = 0xFF;

/// Follows a dot path (`a.b.c`) through JSON objects. `None` if any step is missing or not an
/// object.
pub(crate) fn lookup<'v>(doc: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut current = doc;
    for segment in path {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

pub(crate) fn tag(value: Option<&Value>) -> u8 {
    match value {
        None => TAG_MISSING,
        Some(Value::Number(_)) => TAG_NUMBER,
        Some(Value::String(_)) => TAG_STRING,
        Some(Value::Bool(_)) => TAG_BOOL,
        Some(Value::Null) => TAG_NULL,
        Some(Value::Array(_) | Value::Object(_)) => TAG_OTHER,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// The typed comparison of a document value with a query literal: `None` when they are of
/// different types or not comparable (then no operator matches).
pub(crate) fn compare(doc: &Value, literal: &Value) -> Option<Ordering> {
    match (doc, literal) {
        (Value::Number(_), Value::Number(_)) => as_f64(doc)?.partial_cmp(&as_f64(literal)?),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Bool(a), Value::Bool(b)) => {
            (a == b).then_some(Ordering::Equal).or(Some(Ordering::Less))
        }
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            (json_equal(doc, literal))
                .then_some(Ordering::Equal)
                .or(Some(Ordering::Less))
        }
        _ => None,
    }
}

/// Whether ordering comparisons (GT, GTE, LT, LTE) apply to this pair.
pub(crate) fn ordered(doc: &Value, literal: &Value) -> bool {
    matches!(
        (doc, literal),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
    )
}

/// Deep equality with numbers compared as doubles.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => as_f64(a) == as_f64(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The ascending sort order of two (possibly missing) values, missing last.
pub(crate) fn sort_cmp(a: Option<&Value>, b: Option<&Value>, descending: bool) -> Ordering {
    let (ta, tb) = (tag(a), tag(b));
    if ta == TAG_MISSING || tb == TAG_MISSING {
        // Missing sorts last whatever the direction.
        return ta.cmp(&tb);
    }
    let ascending = ta.cmp(&tb).then_with(|| match (a, b) {
        (Some(x @ Value::Number(_)), Some(y @ Value::Number(_))) => {
            normalised(as_f64(x).unwrap_or(0.0)).total_cmp(&normalised(as_f64(y).unwrap_or(0.0)))
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => Ordering::Equal,
    });
    if descending {
        ascending.reverse()
    } else {
        ascending
    }
}

/// `-0.0` and `0.0` are the same number to every comparison; normalise before encoding.
fn normalised(x: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x }
}

/// Order-preserving encoding of a value: type tag, then
/// - number: the double's bits, sign-flipped so byte order is numeric order (8 bytes);
/// - string: UTF-8 with `0x00` escaped as `0x00 0xFF`, terminated by `0x00 0x01`;
/// - bool: one byte; null, array/object, missing: nothing.
///
/// The encoding is self-delimiting, so an index entry can append the record key after it.
pub(crate) fn encode_sortable(value: Option<&Value>, out: &mut Vec<u8>) {
    let t = tag(value);
    out.push(t);
    match value {
        Some(v @ Value::Number(_)) => {
            let bits = normalised(as_f64(v).unwrap_or(0.0)).to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Some(Value::String(s)) => {
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0x00, 0x01]);
        }
        Some(Value::Bool(b)) => out.push(u8::from(*b)),
        _ => {}
    }
}

/// Length of the encoded value at the start of `bytes` (tag included), or `None` if malformed.
pub(crate) fn encoded_len(bytes: &[u8]) -> Option<usize> {
    let (&t, rest) = bytes.split_first()?;
    match t {
        TAG_NUMBER => (rest.len() >= 8).then_some(9),
        TAG_STRING => {
            let mut i = 0;
            loop {
                match rest.get(i)? {
                    0 => match rest.get(i + 1)? {
                        0x01 => return Some(1 + i + 2),
                        0xFF => i += 2,
                        _ => return None,
                    },
                    _ => i += 1,
                }
            }
        }
        TAG_BOOL => (!rest.is_empty()).then_some(2),
        TAG_NULL | TAG_OTHER | TAG_MISSING => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn typed_comparisons() {
        assert_eq!(compare(&json!(15), &json!(15.0)), Some(Ordering::Equal));
        assert_eq!(compare(&json!(9), &json!(10)), Some(Ordering::Less));
        assert_eq!(compare(&json!("9"), &json!("10")), Some(Ordering::Greater));
        assert_eq!(compare(&json!("9"), &json!(9)), None);
        assert_eq!(compare(&json!(true), &json!(true)), Some(Ordering::Equal));
        assert!(!ordered(&json!(true), &json!(false)));
        assert_eq!(compare(&json!(null), &json!(null)), Some(Ordering::Equal));
        assert_eq!(
            compare(&json!({"a":1}), &json!({"a":1.0})),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn lookup_follows_objects_only() {
        let doc = json!({"a": {"b": 3}, "c": [1]});
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(lookup(&doc, &path("a.b")), Some(&json!(3)));
        assert_eq!(lookup(&doc, &path("a.x")), None);
        assert_eq!(lookup(&doc, &path("c.0")), None);
    }

    fn scalar() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(json!(n))),
            (-1e6f64..1e6).prop_map(|f| Some(json!(f))),
            "[a-c\u{0}\u{e9}]{0,4}".prop_map(|s| Some(json!(s))),
            any::<bool>().prop_map(|b| Some(json!(b))),
            Just(Some(Value::Null)),
            Just(Some(json!([1]))),
        ]
    }

    proptest! {
        /// Byte order of the encoding equals the ascending sort order, and the encoding is
        /// self-delimiting.
        #[test]
        fn encoding_preserves_sort_order(a in scalar(), b in scalar()) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            encode_sortable(a.as_ref(), &mut ea);
            encode_sortable(b.as_ref(), &mut eb);
            prop_assert_eq!(ea.cmp(&eb), sort_cmp(a.as_ref(), b.as_ref(), false));
            prop_assert_eq!(encoded_len(&[ea.clone(), b"key".to_vec()].concat()), Some(ea.len()));
        }
    }
}
