//! A tour of the embedded engine: open a database, write and read, conditional writes with
//! etags, a transaction, a TTL. Run with `cargo run --release -p roost-engine --example tour
//! [DATABASE_FILE]` (default `./tour.roost`).

use roost_engine::{Database, DeleteRequest, Error, Options, SetRequest};

fn main() -> Result<(), Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tour.roost".to_string());
    let db = Database::open(Options::new(&path))?;
    println!("opened {path}");

    let etag = db.set(SetRequest::new("order-1", br#"{"total":3}"#.to_vec()))?;
    let record = db.get("order-1")?.expect("just written");
    println!(
        "order-1 = {} (etag {})",
        String::from_utf8_lossy(&record.value),
        record.etag
    );

    let next =
        db.set(SetRequest::new("order-1", br#"{"total":4}"#.to_vec()).etag(etag.to_string()))?;
    println!("updated with etag {etag}, new etag {next}");
    match db.set(SetRequest::new("order-1", br#"{"total":5}"#.to_vec()).etag(etag.to_string())) {
        Err(err @ Error::EtagMismatch { .. }) => println!("stale etag refused: {err}"),
        other => println!("unexpected: {other:?}"),
    }

    db.transact(vec![
        SetRequest::new("order-2", br#"{"total":1}"#.to_vec()).into(),
        DeleteRequest::new("order-1").into(),
    ])?;
    println!(
        "transaction applied: order-1 gone = {}",
        db.get("order-1")?.is_none()
    );

    db.set(SetRequest::new("session", b"\"token\"".to_vec()).ttl_in_seconds("60"))?;
    let session = db.get("session")?.expect("live");
    println!(
        "session expires at {}",
        session.expire_time_rfc3339().unwrap_or_default()
    );
    db.close()?;
    println!("closed cleanly");
    Ok(())
}
