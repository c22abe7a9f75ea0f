//! The query language over the engine: Dapr's conformance queries, typed comparisons, sort,
//! keyset pages under concurrent change, the byte cut, expiry, and indexes (which must never
//! change an answer).

mod common;

use std::sync::Arc;

use common::T0;
use proptest::prelude::*;
use roost_engine::{Database, DeleteRequest, ManualClock, Options, Query, SetRequest};
use serde_json::{Value, json};

fn open_with(dir: &std::path::Path, clock: &ManualClock, indexes: &[&str]) -> Database {
    Database::open(
        Options::new(dir.join("q.roost"))
            .clock(Arc::new(clock.clone()))
            .sweep_interval(None)
            .indexes(indexes.iter().copied()),
    )
    .unwrap()
}

fn put(db: &Database, key: &str, doc: Value) {
    db.set(SetRequest::new(key, doc.to_string()).content_type("application/json"))
        .unwrap();
}

fn keys(db: &Database, query: &str) -> Vec<String> {
    let page = db.query(&Query::parse_json(query).unwrap()).unwrap();
    assert!(page.token.is_none(), "unexpected token for {query}");
    page.rows
        .iter()
        .map(|r| String::from_utf8(r.key.clone()).unwrap())
        .collect()
}

/// Every page of a query, following tokens; the keys in order.
fn all_pages(db: &Database, mut query: Query) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = db.query(&query).unwrap();
        out.extend(
            page.rows
                .iter()
                .map(|r| String::from_utf8(r.key.clone()).unwrap()),
        );
        match page.token {
            Some(token) => query.token = Some(token),
            None => return out,
        }
    }
    panic!("pagination never ended");
}

const BASE: &str = "9b7c";

fn conformance_data(db: &Database) {
    put(db, "k-struct", json!({"message": format!("test{BASE}")}));
    put(
        db,
        "k-struct-operations",
        json!({"product": {"value": 15}, "status": "ACTIVE", "message": format!("{BASE}message")}),
    );
    put(
        db,
        "k-struct-operations-inactive",
        json!({"product": {"value": 12}, "status": "INACTIVE", "message": format!("{BASE}message")}),
    );
    put(db, "k-struct-2", json!({"message": format!("{BASE}test")}));
    put(db, "k-struct-with-int", json!({"message": 42}));
    db.set(SetRequest::new("k-bytes", vec![0x01])).unwrap();
    db.set(SetRequest::new("k-string", "\"hello world\""))
        .unwrap();
}

fn conformance_queries(db: &Database) {
    // Q1
    assert_eq!(
        keys(
            db,
            &format!(
                r#"{{"filter":{{"OR":[{{"EQ":{{"message":"dummy"}}}},{{"IN":{{"message":["test{BASE}","dummy"]}}}}]}}}}"#
            )
        ),
        ["k-struct"]
    );
    // Q2
    assert_eq!(
        keys(
            db,
            &format!(
                r#"{{"filter":{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"GTE":{{"product.value":10}}}},{{"LT":{{"product.value":20}}}},{{"NEQ":{{"status":"INACTIVE"}}}}]}}}}"#
            )
        ),
        ["k-struct-operations"]
    );
    // Q3
    assert_eq!(
        keys(
            db,
            &format!(
                r#"{{"filter":{{"OR":[{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"GT":{{"product.value":11.1}}}},{{"EQ":{{"status":"INACTIVE"}}}}]}},{{"AND":[{{"EQ":{{"message":"{BASE}message"}}}},{{"LTE":{{"product.value":0.5}}}},{{"EQ":{{"status":"ACTIVE"}}}}]}}]}}}}"#
            )
        ),
        ["k-struct-operations-inactive"]
    );
    // Q4: two results, -struct before -struct-2.
    assert_eq!(
        keys(
            db,
            &format!(
                r#"{{"filter":{{"OR":[{{"EQ":{{"message":"{BASE}test"}}}},{{"IN":{{"message":["test{BASE}","dummy"]}}}}]}}}}"#
            )
        ),
        ["k-struct", "k-struct-2"]
    );
}

#[test]
fn conformance_queries_q1_to_q4_with_and_without_indexes() {
    for indexes in [&[][..], &["message", "product.value", "status"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = open_with(dir.path(), &clock, indexes);
        conformance_data(&db);
        conformance_queries(&db);
    }
}

#[test]
fn typed_comparisons_and_missing_fields() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with(dir.path(), &clock, &[]);
    put(&db, "a", json!({"n": 9}));
    put(&db, "b", json!({"n": 10}));
    put(&db, "c", json!({"n": "10"}));
    put(&db, "d", json!({"n": 15.0}));
    put(&db, "e", json!({"other": 1}));
    put(&db, "f", json!({"n": null}));
    assert_eq!(
        keys(&db, r#"{"filter":{"LT":{"n":10}}}"#),
        ["a"],
        "numbers as numbers: 9 < 10"
    );
    assert_eq!(
        keys(&db, r#"{"filter":{"EQ":{"n":15}}}"#),
        ["d"],
        "15 = 15.0"
    );
    assert_eq!(
        keys(&db, r#"{"filter":{"EQ":{"n":"10"}}}"#),
        ["c"],
        "strings only match strings"
    );
    assert_eq!(keys(&db, r#"{"filter":{"GT":{"n":"1"}}}"#), ["c"]);
    assert_eq!(
        keys(&db, r#"{"filter":{"NEQ":{"n":10}}}"#),
        ["a", "d"],
        "NEQ: same type and different; missing (e), null (f) and strings (c) do not match"
    );
    assert_eq!(keys(&db, r#"{"filter":{"EQ":{"n":null}}}"#), ["f"]);
    assert_eq!(keys(&db, r#"{}"#), ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn multi_key_sort_with_missing_last_and_ties_by_key() {
    for indexes in [&[][..], &["g", "n"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = open_with(dir.path(), &clock, indexes);
        put(&db, "k1", json!({"g": "x", "n": 2}));
        put(&db, "k2", json!({"g": "x", "n": 1}));
        put(&db, "k3", json!({"g": "a", "n": 5}));
        put(&db, "k4", json!({"n": 3}));
        put(&db, "k5", json!({"g": "x", "n": 2}));
        put(&db, "k6", json!({"g": 7}));
        assert_eq!(
            keys(&db, r#"{"sort":[{"key":"g"},{"key":"n","order":"DESC"}]}"#),
            ["k6", "k3", "k5", "k1", "k2", "k4"],
            "numbers before strings; n DESC within g; ties by key descending (last key DESC); missing last"
        );
        assert_eq!(
            keys(&db, r#"{"sort":[{"key":"g","order":"DESC"}]}"#),
            ["k5", "k2", "k1", "k3", "k6", "k4"],
            "DESC reverses everything but missing, which stays last"
        );
        assert_eq!(
            keys(&db, r#"{"sort":[{"key":"n"}]}"#),
            ["k2", "k1", "k5", "k4", "k3", "k6"]
        );
    }
}

#[test]
fn expired_and_binary_records_never_appear() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with(dir.path(), &clock, &["n"]);
    put(&db, "live", json!({"n": 1}));
    db.set(SetRequest::new("short", json!({"n": 1}).to_string()).ttl_in_seconds("1"))
        .unwrap();
    db.set(SetRequest::new("binary", vec![0xff, 0x00, 0x01]))
        .unwrap();
    assert_eq!(keys(&db, r#"{"filter":{"EQ":{"n":1}}}"#), ["live", "short"]);
    clock.advance_ms(1000);
    assert_eq!(keys(&db, r#"{"filter":{"EQ":{"n":1}}}"#), ["live"]);
    assert_eq!(keys(&db, r#"{"sort":[{"key":"n"}]}"#), ["live"]);
    assert_eq!(keys(&db, r#"{}"#), ["live"]);
    // After the sweep the index entries are gone as well.
    assert_eq!(db.sweep_expired().unwrap(), 1);
    assert_eq!(keys(&db, r#"{"filter":{"EQ":{"n":1}}}"#), ["live"]);
}

#[test]
fn pages_are_stable_under_inserts_and_deletes() {
    for (indexes, query) in [
        (&[][..], r#"{"page":{"limit":3}}"#),
        (
            &[][..],
            r#"{"filter":{"GTE":{"n":0}},"sort":[{"key":"n","order":"DESC"}],"page":{"limit":3}}"#,
        ),
        (&["n"][..], r#"{"sort":[{"key":"n"}],"page":{"limit":3}}"#),
        (
            &["n"][..],
            r#"{"filter":{"GTE":{"n":0}},"page":{"limit":3}}"#,
        ),
        (
            &["n"][..],
            r#"{"sort":[{"key":"n","order":"DESC"}],"page":{"limit":3}}"#,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = open_with(dir.path(), &clock, indexes);
        for i in 0..20 {
            put(&db, &format!("k{i:02}"), json!({"n": i}));
        }
        let mut q = Query::parse_json(query).unwrap();
        let mut seen = Vec::new();
        let mut round = 0;
        loop {
            let page = db.query(&q).unwrap();
            seen.extend(
                page.rows
                    .iter()
                    .map(|r| String::from_utf8(r.key.clone()).unwrap()),
            );
            // Between pages: delete a row not yet seen, insert rows before and after the cursor.
            round += 1;
            db.delete(DeleteRequest::new(format!("k{:02}", (round * 7) % 20)))
                .unwrap();
            put(&db, &format!("new{round}"), json!({"n": 100 + round}));
            put(&db, &format!("a-new{round}"), json!({"n": -round}));
            match page.token {
                Some(t) => q.token = Some(t),
                None => break,
            }
        }
        // Every original row that was never deleted appears exactly once.
        let deleted: Vec<String> = (1..=round)
            .map(|r| format!("k{:02}", (r * 7) % 20))
            .collect();
        for i in 0..20 {
            let key = format!("k{i:02}");
            let count = seen.iter().filter(|k| **k == key).count();
            if deleted.contains(&key) {
                assert!(count <= 1, "{query}: {key} seen {count} times");
            } else {
                assert_eq!(count, 1, "{query}: {key} seen {count} times in {seen:?}");
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{query}: duplicates in {seen:?}");
    }
}

#[test]
fn pages_are_cut_by_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open_with(dir.path(), &clock, &[]);
    let filler = "x".repeat(1000);
    for i in 0..50 {
        put(&db, &format!("k{i:02}"), json!({"i": i, "pad": filler}));
    }
    let mut query = Query::parse_json("{}").unwrap();
    query.max_response_bytes = 10_000;
    let page = db.query(&query).unwrap();
    let bytes: usize = page.rows.iter().map(|r| r.key.len() + r.value.len()).sum();
    assert!(
        bytes <= 10_000 && page.rows.len() >= 8,
        "{} rows, {bytes} bytes",
        page.rows.len()
    );
    assert!(page.token.is_some());
    let all = all_pages(&db, query);
    assert_eq!(all.len(), 50);
}

#[test]
fn indexes_are_built_for_existing_data_and_dropped_when_undeclared() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let db = open_with(dir.path(), &clock, &[]);
        for i in 0..12_000 {
            put(&db, &format!("k{i:05}"), json!({"n": i % 100}));
        }
        db.close().unwrap();
    }
    let db = open_with(dir.path(), &clock, &["n"]);
    assert_eq!(db.indexed_paths(), ["n"]);
    let q = r#"{"filter":{"EQ":{"n":42}}}"#;
    assert_eq!(keys(&db, q).len(), 120);
    let mut scan = Query::parse_json(q).unwrap();
    scan.force_full_scan = true;
    assert_eq!(db.query(&scan).unwrap().rows.len(), 120);
    db.close().unwrap();
    drop(db);
    let db = open_with(dir.path(), &clock, &[]);
    assert!(db.indexed_paths().is_empty());
    assert_eq!(keys(&db, q).len(), 120);
    db.close().unwrap();
    drop(db);
    // Declared again: rebuilt from the records, including writes made while undeclared.
    let db = open_with(dir.path(), &clock, &[]);
    put(&db, "late", json!({"n": 42}));
    db.close().unwrap();
    drop(db);
    let db = open_with(dir.path(), &clock, &["n"]);
    assert_eq!(keys(&db, q).len(), 121);
}

// --- Property: indexed answers equal full-scan answers -------------------------------------

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(|n| json!(n)),
        prop_oneof![Just(0.5), Just(-0.0), Just(2.0)].prop_map(|f| json!(f)),
        prop_oneof![Just("a"), Just("b"), Just(""), Just("a\u{0}"), Just("é")]
            .prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn doc() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => (
            prop::option::of(scalar()),
            prop::option::of(scalar()),
            prop::option::of(scalar()),
        )
            .prop_map(|(a, b, c)| {
                let mut doc = serde_json::Map::new();
                if let Some(a) = a { doc.insert("a".into(), a); }
                if let Some(b) = b { doc.insert("o".into(), json!({"b": b})); }
                if let Some(c) = c { doc.insert("c".into(), c); }
                Some(Value::Object(doc))
            }),
        1 => Just(Some(json!([1, 2]))),
        1 => Just(None),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    let path = prop_oneof![Just("a"), Just("o.b"), Just("c")];
    let op = prop_oneof![
        Just("EQ"),
        Just("NEQ"),
        Just("GT"),
        Just("GTE"),
        Just("LT"),
        Just("LTE")
    ];
    prop_oneof![
        4 => (op, path.clone(), scalar()).prop_map(|(op, p, v)| json!({op: {p: v}})),
        1 => (path, prop::collection::vec(scalar(), 0..3)).prop_map(|(p, vs)| json!({"IN": {p: vs}})),
    ]
}

fn filter() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        3 => leaf().prop_map(Some),
        3 => prop::collection::vec(leaf(), 2..4).prop_map(|v| Some(json!({"AND": v}))),
        1 => prop::collection::vec(leaf(), 2..3).prop_map(|v| Some(json!({"OR": v}))),
    ]
}

fn sort() -> impl Strategy<Value = Vec<Value>> {
    let key = (
        prop_oneof![Just("a"), Just("o.b"), Just("c")],
        any::<bool>(),
    )
        .prop_map(|(k, d)| json!({"key": k, "order": if d { "DESC" } else { "ASC" }}));
    prop::collection::vec(key, 0..3)
}

/// A query document with an optional filter, a sort and a page limit.
fn query_text(filter: Option<Value>, sort: Vec<Value>, limit: usize) -> String {
    let mut body = serde_json::Map::new();
    if let Some(f) = filter {
        body.insert("filter".into(), f);
    }
    body.insert("sort".into(), Value::Array(sort));
    body.insert("page".into(), json!({"limit": limit}));
    Value::Object(body).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn indexed_and_full_scan_answers_are_identical(
        docs in prop::collection::vec(doc(), 0..40),
        queries in prop::collection::vec((filter(), sort(), 0usize..5), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let db = open_with(dir.path(), &clock, &["a", "o.b"]);
        for (i, doc) in docs.iter().enumerate() {
            let key = format!("k{:02}", (i * 7) % 41);
            match doc {
                Some(doc) => put(&db, &key, doc.clone()),
                None => { db.set(SetRequest::new(key, vec![0xfe])).unwrap(); }
            }
        }
        for (filter, sort, limit) in queries {
            let text = query_text(filter, sort, limit);
            let indexed = Query::parse_json(&text).unwrap();
            let mut scan = indexed.clone();
            scan.force_full_scan = true;
            let (a, b) = (all_pages(&db, indexed), all_pages(&db, scan));
            prop_assert_eq!(a, b, "{}", text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]

    /// With acknowledged writes not yet applied to the main file (catch-up held, so they are
    /// in the overlay only, or newer there than in redb), indexed and full-scan answers equal
    /// each other and the answers of a database holding the same writes all applied.
    #[test]
    fn answers_over_unapplied_writes_equal_answers_over_applied_ones(
        applied in prop::collection::vec(doc(), 0..30),
        unapplied in prop::collection::vec(prop::option::of(doc()), 0..30),
        queries in prop::collection::vec((filter(), sort(), 0usize..5), 1..5),
    ) {
        let clock = ManualClock::new(T0);
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let held = open_with(dir_a.path(), &clock, &["a", "o.b"]);
        let reference = open_with(dir_b.path(), &clock, &["a", "o.b"]);
        let write = |db: &Database, i: usize, doc: &Option<Option<Value>>| {
            let key = format!("k{:02}", (i * 7) % 23);
            match doc {
                Some(Some(doc)) => put(db, &key, doc.clone()),
                Some(None) => { db.set(SetRequest::new(key, vec![0xfe])).unwrap(); }
                None => db.delete(DeleteRequest::new(key)).unwrap(),
            }
        };
        for (i, doc) in applied.iter().enumerate() {
            write(&held, i, &Some(doc.clone()));
            write(&reference, i, &Some(doc.clone()));
        }
        held.sync().unwrap();
        held.pause_catchup();
        for (i, doc) in unapplied.iter().enumerate() {
            write(&held, i * 3 + 1, doc);
            write(&reference, i * 3 + 1, doc);
        }
        reference.sync().unwrap();
        for (filter, sort, limit) in &queries {
            let text = query_text(filter.clone(), sort.clone(), *limit);
            let indexed = Query::parse_json(&text).unwrap();
            let mut scan = indexed.clone();
            scan.force_full_scan = true;
            let expected = all_pages(&reference, scan.clone());
            prop_assert_eq!(&all_pages(&held, indexed.clone()), &expected, "indexed: {}", text);
            prop_assert_eq!(&all_pages(&held, scan.clone()), &expected, "scan: {}", text);
        }
        let scan_all = |db: &Database| db.scan("", None, 0).unwrap().records.into_iter().map(|(k, r)| (k, r.value)).collect::<Vec<_>>();
        prop_assert_eq!(scan_all(&held), scan_all(&reference));
        prop_assert_eq!(held.keyspace_stats().unwrap().records, reference.keyspace_stats().unwrap().records);
        // Catch-up applies everything held in one step, each key's last state only.
        held.resume_catchup();
        held.sync().unwrap();
        prop_assert_eq!(scan_all(&held), scan_all(&reference));
        for (filter, sort, limit) in queries {
            let text = query_text(filter, sort, limit);
            let indexed = Query::parse_json(&text).unwrap();
            let mut scan = indexed.clone();
            scan.force_full_scan = true;
            let expected = all_pages(&reference, scan);
            prop_assert_eq!(&all_pages(&held, indexed), &expected, "indexed, applied: {}", text);
        }
    }
}

// --- Fuzzing the parser: arbitrary JSON never panics, and errors are InvalidQuery ----------

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[A-Za-z.]{0,6}".prop_map(Value::String),
        prop_oneof![
            Just("EQ"),
            Just("AND"),
            Just("IN"),
            Just("filter"),
            Just("sort"),
            Just("page")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("filter".to_string()),
                    Just("sort".to_string()),
                    Just("page".to_string()),
                    Just("EQ".to_string()),
                    Just("NEQ".to_string()),
                    Just("IN".to_string()),
                    Just("AND".to_string()),
                    Just("OR".to_string()),
                    Just("key".to_string()),
                    Just("order".to_string()),
                    Just("limit".to_string()),
                    Just("token".to_string()),
                    "[a-z.]{1,5}",
                ],
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_query_parser_never_panics(doc in arbitrary_json(), raw in prop::collection::vec(any::<u8>(), 0..40)) {
        for text in [doc.to_string().into_bytes(), raw] {
            match Query::parse_json(&text) {
                Ok(_) => {}
                Err(err) => prop_assert!(matches!(err, roost_engine::Error::InvalidQuery(_)), "{err:?}"),
            }
        }
        if let Some((op, operand)) = doc.as_object().and_then(|o| o.iter().next()) {
            let _ = roost_engine::Filter::from_operator(op, operand.to_string().as_bytes());
        }
    }
}

#[test]
fn hostile_query_documents_are_refused_cleanly() {
    // Nesting beyond serde_json's own recursion limit, and beyond ours.
    let deep_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Query::parse_json(format!(r#"{{"filter":{deep_json}}}"#)).is_err());
    let deep_filter = (0..200).fold(r#"{"EQ":{"a":1}}"#.to_string(), |inner, _| {
        format!(
            r#"{{"OR":[{inner},{inner_short}]}}"#,
            inner_short = r#"{"EQ":{"b":1}}"#
        )
    });
    let err = Query::parse_json(format!(r#"{{"filter":{deep_filter}}}"#)).unwrap_err();
    assert!(
        err.to_string().contains("nested") || err.to_string().contains("recursion"),
        "{err}"
    );
    let long_path = vec!["p"; 100].join(".");
    let err =
        Query::parse_json(format!(r#"{{"filter":{{"EQ":{{"{long_path}":1}}}}}}"#)).unwrap_err();
    assert!(err.to_string().contains("segments"), "{err}");
}

/// Catch-up keeps one redb write transaction open while batches keep arriving, so a key
/// rewritten by consecutive writes is written into the same uncommitted step several times,
/// each time replacing index and expiry entries that only that step holds. The index must
/// follow the key's last state: in the overlay, after the step's commit and after reopen.
#[test]
fn a_key_rewritten_within_one_catch_up_step_keeps_its_index_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let eq = |v: &str| format!(r#"{{"filter":{{"EQ":{{"status":"{v}"}}}}}}"#);
    let expect = |db: &Database, when: &str| {
        assert_eq!(keys(db, &eq("s49")), vec!["k".to_string()], "{when}");
        for old in ["s0", "s25", "s48"] {
            assert!(keys(db, &eq(old)).is_empty(), "{when}: k still under {old}");
        }
        assert_eq!(keys(db, &eq("x")).len(), 50, "{when}");
        // The expiring key was rewritten without a TTL last: it outlives its first TTL.
        assert_eq!(keys(db, &eq("kept")), vec!["t".to_string()], "{when}");
    };
    {
        let db = open_with(dir.path(), &clock, &["status"]);
        for round in 0..50 {
            put(&db, "k", json!({ "status": format!("s{round}") }));
            put(&db, &format!("other{round}"), json!({ "status": "x" }));
        }
        db.set(
            SetRequest::new("t", json!({ "status": "expiring" }).to_string())
                .content_type("application/json")
                .ttl_in_seconds("5"),
        )
        .unwrap();
        put(&db, "t", json!({ "status": "kept" }));
        clock.advance_ms(10_000);
        expect(&db, "before the step's commit");
        db.sync().unwrap();
        expect(&db, "after sync");
        db.close().unwrap();
    }
    let db = open_with(dir.path(), &clock, &["status"]);
    expect(&db, "after reopen");
}
