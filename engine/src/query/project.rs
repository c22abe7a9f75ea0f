//! Parsing only what a query reads. A full scan used to build a whole `serde_json::Value` per
//! record; this parser validates the whole document just the same (serde skips unwanted
//! members with `IgnoredAny`, which still checks their syntax) but materialises only the
//! members on the paths the filter and the sort look at. Lookups on the result give exactly
//! what they give on the full document: the same members along each path, and the whole
//! value at its end.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Filter, Query};

/// The paths a query reads, as a tree of member names.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    children: BTreeMap<String, Wanted>,
    /// The whole value here is wanted (a path ends here).
    whole: bool,
}

impl Wanted {
    pub fn of(query: &Query) -> Wanted {
        let mut wanted = Wanted::default();
        wanted.add_filter(&query.filter);
        for key in &query.sort {
            wanted.add(&key.segments);
        }
        wanted
    }

    fn add_filter(&mut self, filter: &Filter) {
        match filter {
            Filter::All => {}
            Filter::Cmp { path, .. } | Filter::In { path, .. } => self.add(path),
            Filter::And(children) | Filter::Or(children) => {
                children.iter().for_each(|c| self.add_filter(c))
            }
        }
    }

    fn add(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.whole = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().add(rest),
        }
    }

    /// Parses `bytes` (which must be one JSON document, as `serde_json::from_slice` requires)
    /// keeping only the wanted members.
    pub fn parse(&self, bytes: &[u8]) -> Result<Value, ParseError> {
        // Skipped strings are not UTF-8-checked by serde; a full parse would refuse them.
        let text = std::str::from_utf8(bytes).map_err(|_| ParseError)?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = self
            .deserialize(&mut deserializer)
            .map_err(|_| ParseError)?;
        deserializer.end().map_err(|_| ParseError)?;
        Ok(value)
    }
}

/// The document is not JSON (the query skips it, as it skips any non-JSON value).
#[derive(Debug)]
pub(crate) struct ParseError;

impl<'de> DeserializeSeed<'de> for &Wanted {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.whole {
            return Value::deserialize(deserializer);
        }
        deserializer.deserialize_any(Pruning(self))
    }
}

use serde::Deserialize as _;

/// Visits a value of which only some members are wanted. Lookups only descend into objects,
/// so anything else here is validated and dropped.
struct Pruning<'w>(&'w Wanted);

impl<'de> Visitor<'de> for Pruning<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.0.children.get(&key) {
                Some(child) => {
                    let value = map.next_value_seed(child)?;
                    out.insert(key, value);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Skips a value while checking it as strictly as a full parse: strings are decoded (so
/// lone surrogate escapes are refused, as `Value` refuses them) but nothing is kept.
/// (`IgnoredAny` would skip strings without decoding their escapes.)
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::value::lookup;

    fn query(text: &str) -> Query {
        Query::parse_json(text).unwrap()
    }

    #[test]
    fn lookups_on_the_pruned_document_equal_lookups_on_the_whole() {
        let docs = [
            r#"{"a":{"b":1,"c":[1,2]},"s":"x","n":null,"big":{"deep":{"x":[{"y":1}]}},"a2":3}"#,
            r#"{"a":5,"s":{"t":1}}"#,
            r#"{"a":{"b":{"c":{"d":true}}},"s":"dup","s":"last"}"#,
            r#"[1,2,{"a":1}]"#,
            r#""text""#,
            r#"12.5"#,
            r#"{}"#,
        ];
        let q = query(
            r#"{"filter":{"OR":[{"EQ":{"a.b":1}},{"IN":{"s":["x","last"]}}]},"sort":[{"key":"a.b.c"},{"key":"n"}]}"#,
        );
        let wanted = Wanted::of(&q);
        let paths: Vec<Vec<String>> = ["a.b", "s", "a.b.c", "n", "a", "a.b.c.d", "big.deep", "zz"]
            .iter()
            .map(|p| p.split('.').map(str::to_string).collect())
            .collect();
        for doc in docs {
            let whole: Value = serde_json::from_slice(doc.as_bytes()).unwrap();
            let pruned = wanted.parse(doc.as_bytes()).unwrap();
            assert_eq!(q.filter.matches(&pruned), q.filter.matches(&whole), "{doc}");
            for path in &paths[..4] {
                assert_eq!(
                    lookup(&pruned, path),
                    lookup(&whole, path),
                    "{doc} {path:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_json_is_refused_like_a_full_parse() {
        let wanted = Wanted::of(&query(r#"{"filter":{"EQ":{"a":1}}}"#));
        for bad in [
            &b"{\"a\":1,"[..],
            b"{\"b\":[1,}",
            b"{\"a\":1} x",
            b"",
            b"nope",
            b"{\"b\":\"\xff\"}",
            b"{\"b\":\"\\ud800\"}",
            b"{\"b\":\"\\ud800\\u0041\"}",
            b"{\"b\":\"\\x\"}",
            b"{\"b\":01}",
            b"{\"a\":1,\"b\":{\"c\":[true,false,null,1e5,-0.5,\"\\u00e9\"]}}",
        ] {
            assert_eq!(
                wanted.parse(bad).is_ok(),
                serde_json::from_slice::<Value>(bad).is_ok(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
