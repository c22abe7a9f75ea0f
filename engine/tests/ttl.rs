//! TTL: parsing, invisibility of expired records on every read path, the expiry report, and
//! the sweeper. Time is a manual clock; nothing sleeps.

mod common;

use common::{T0, open};
use roost_engine::{DeleteRequest, Error, ManualClock, SetRequest, Ttl};

#[test]
fn ttl_values_follow_dapr_rules() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    for bad in ["foo", "1.5", "-2", "2147483648", ""] {
        let result = db.set(SetRequest::new("k", b"v".to_vec()).ttl_in_seconds(bad));
        if bad.is_empty() {
            // Empty means no TTL, as if the key were absent.
            assert!(result.is_ok());
            assert_eq!(db.get("k").unwrap().unwrap().expires_at_unix_ms, None);
        } else {
            assert!(
                matches!(result, Err(Error::InvalidTtl { .. })),
                "{bad}: {result:?}"
            );
        }
    }
    db.set(SetRequest::new("max", b"v".to_vec()).ttl_in_seconds("2147483647"))
        .unwrap();
    assert_eq!(
        db.get("max").unwrap().unwrap().expires_at_unix_ms,
        Some(T0 + 2_147_483_647_000)
    );
}

#[test]
fn expired_records_vanish_from_get_and_bulk_get_at_once() {
    // Dapr conformance T2, with a manual clock.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    db.set(SetRequest::new("k", "\"⏱️\"").ttl_in_seconds("2"))
        .unwrap();
    assert!(db.get("k").unwrap().is_some());
    clock.advance_ms(1999);
    assert!(db.get("k").unwrap().is_some());
    clock.advance_ms(1);
    assert_eq!(db.get("k").unwrap(), None);
    assert_eq!(db.bulk_get(&["k"]).unwrap(), vec![None]);
}

#[test]
fn expiry_is_reported_as_rfc3339_and_only_when_set() {
    // Dapr conformance T4, T5a, T5c.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    db.set(SetRequest::new("plain", b"1".to_vec())).unwrap();
    db.set(SetRequest::new("hour", b"\"123\"".to_vec()).ttl_in_seconds("3600"))
        .unwrap();
    db.set(SetRequest::new("hour2", b"\"234\"".to_vec()).ttl(Ttl::Seconds(3600)))
        .unwrap();
    assert_eq!(
        db.get("plain").unwrap().unwrap().expire_time_rfc3339(),
        None
    );
    let records = db.bulk_get(&["hour", "hour2"]).unwrap();
    for record in records {
        let record = record.unwrap();
        assert_eq!(
            record.expire_time_rfc3339().as_deref(),
            Some("2026-01-01T01:00:00Z")
        );
    }
}

#[test]
fn ttl_minus_one_or_absent_clears_an_expiry() {
    // Dapr conformance T5b.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    db.set(SetRequest::new("k", b"1".to_vec()).ttl_in_seconds("2"))
        .unwrap();
    assert!(db.get("k").unwrap().unwrap().expires_at_unix_ms.is_some());
    db.set(SetRequest::new("k", b"1".to_vec()).ttl_in_seconds("-1"))
        .unwrap();
    assert_eq!(db.get("k").unwrap().unwrap().expires_at_unix_ms, None);
    clock.advance_ms(3000);
    assert!(db.get("k").unwrap().is_some());
    db.set(SetRequest::new("k", b"1".to_vec()).ttl_in_seconds("2"))
        .unwrap();
    db.set(SetRequest::new("k", b"1".to_vec())).unwrap();
    clock.advance_ms(3000);
    let record = db.get("k").unwrap().unwrap();
    assert_eq!(record.expires_at_unix_ms, None);
}

#[test]
fn each_write_resets_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = open(dir.path(), &clock);
    db.set(SetRequest::new("k", b"1".to_vec()).ttl_in_seconds("10"))
        .unwrap();
    clock.advance_ms(8000);
    db.set(SetRequest::new("k", b"2".to_vec()).ttl_in_seconds("10"))
        .unwrap();
    clock.advance_ms(8000);
    assert_eq!(db.get("k").unwrap().unwrap().value, b"2");
    clock.advance_ms(2000);
    assert_eq!(db.get("k").unwrap(), None);
}

#[test]
fn sweeper_deletes_only_expired_records_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db =
        roost_engine::Database::open(common::options(dir.path(), &clock).sweep_batch(7)).unwrap();
    for i in 0..20 {
        db.set(SetRequest::new(format!("short{i}"), b"v".to_vec()).ttl_in_seconds("5"))
            .unwrap();
        db.set(SetRequest::new(format!("long{i}"), b"v".to_vec()).ttl_in_seconds("500"))
            .unwrap();
        db.set(SetRequest::new(format!("never{i}"), b"v".to_vec()))
            .unwrap();
    }
    // A TTL replaced by a longer one, and a TTL key deleted: neither is swept too early.
    db.set(SetRequest::new("short0", b"v".to_vec()).ttl_in_seconds("500"))
        .unwrap();
    db.delete(DeleteRequest::new("short1")).unwrap();
    assert_eq!(db.sweep_expired().unwrap(), 0);
    clock.advance_ms(5000);
    // 18 short records are due; batches of 7.
    assert_eq!(db.sweep_expired().unwrap(), 7);
    assert_eq!(db.sweep_expired().unwrap(), 7);
    assert_eq!(db.sweep_expired().unwrap(), 4);
    assert_eq!(db.sweep_expired().unwrap(), 0);
    assert_eq!(db.stats().swept, 18);
    assert!(db.get("short0").unwrap().is_some());
    for i in 0..20 {
        assert!(db.get(format!("long{i}")).unwrap().is_some());
        assert!(db.get(format!("never{i}")).unwrap().is_some());
    }
    clock.advance_ms(500_000);
    assert_eq!(db.sweep_expired().unwrap(), 7);
    assert_eq!(db.sweep_expired().unwrap(), 7);
    assert_eq!(db.sweep_expired().unwrap(), 7);
    assert_eq!(db.sweep_expired().unwrap(), 0);
    for i in 0..20 {
        assert!(db.get(format!("never{i}")).unwrap().is_some());
    }
}

#[test]
fn background_sweeper_runs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = roost_engine::Database::open(
        common::options(dir.path(), &clock)
            .sweep_interval(Some(std::time::Duration::from_millis(10))),
    )
    .unwrap();
    db.set(SetRequest::new("k", b"v".to_vec()).ttl_in_seconds("1"))
        .unwrap();
    clock.advance_ms(1000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.stats().swept == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(db.stats().swept, 1);
}
