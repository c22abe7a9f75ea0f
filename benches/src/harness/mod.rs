//! The comparison harness behind `roost-bench`: Roost against Redis, PostgreSQL and SQLite,
//! each doing per operation what its Dapr state component does, on servers the harness starts
//! itself, in one run on one machine.
//!
//! - [`servers`]: starting and stopping `redis-server`, PostgreSQL and `roost serve`;
//! - [`targets`]: one client per store, speaking its Dapr component's statements;
//! - [`run`]: workloads, workers, latencies;
//! - [`report`]: the markdown table, the JSON file and the SVG chart;
//! - [`swarm`]: blackboard swarms of processes (`roost-bench swarm`, the swarm tests).

pub mod report;
pub mod run;
pub mod servers;
pub mod swarm;
pub mod targets;

use std::fmt;
use std::time::Duration;

/// A failure of the harness itself (a server that does not start, a missing binary).
#[derive(Debug)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(err: std::io::Error) -> HarnessError {
        HarnessError(err.to_string())
    }
}

impl From<targets::OpError> for HarnessError {
    fn from(err: targets::OpError) -> HarnessError {
        match err {
            targets::OpError::Conflict => HarnessError("unexpected etag conflict".into()),
            targets::OpError::Failed(text) => HarnessError(text),
        }
    }
}

/// The stores under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Target {
    /// `roost serve` over its Unix socket, `durability: immediate` (fsync before the ack).
    Roost,
    /// `roost serve` over its Unix socket, `durability: eventual` (flushed within 100 ms).
    RoostEventual,
    /// `roost serve` from another build of the harness (`--baseline-server`), immediate
    /// durability: a server change's before/after in one run.
    RoostBaseline,
    /// The engine in the harness process, immediate durability.
    Embedded,
    /// The engine in the harness process, eventual durability.
    EmbeddedEventual,
    /// The engine in process, immediate durability without the write-ahead log (one redb
    /// fsync'ed commit per batch): the WAL's before/after in one run.
    EmbeddedNowal,
    /// `state.redis` on redis-server with `appendfsync always`.
    Redis,
    /// `state.redis` on redis-server with persistence off.
    RedisNopersist,
    /// `state.postgresql` v2 with `synchronous_commit = on`.
    Postgres,
    /// `state.postgresql` v2 with `synchronous_commit = off`.
    PostgresAsync,
    /// `state.sqlite` (WAL, the default `synchronous = FULL`).
    Sqlite,
    /// Roost (`roost serve`, immediate durability) behind a real daprd, through daprd's gRPC
    /// API as an SDK calls it.
    DaprdRoost,
    /// `roost serve` from another build of the harness (`--baseline-server`) behind a real
    /// daprd: a server change's before/after through daprd in one run.
    DaprdRoostBaseline,
    /// Dapr's `state.redis` behind daprd, redis-server with `appendfsync always`.
    DaprdRedis,
    /// Dapr's `state.redis` behind daprd, redis-server without persistence.
    DaprdRedisNopersist,
    /// Dapr's `state.postgresql` v2 behind daprd, `synchronous_commit = on`.
    DaprdPostgres,
    /// Dapr's `state.sqlite` behind daprd (the component's defaults: WAL, in daprd's process).
    DaprdSqlite,
    /// Dapr's `state.in-memory` behind daprd.
    DaprdMemory,
}

impl Target {
    /// The targets behind a real daprd.
    pub const DAPRD: [Target; 7] = [
        Target::DaprdRoost,
        Target::DaprdRoostBaseline,
        Target::DaprdRedis,
        Target::DaprdRedisNopersist,
        Target::DaprdPostgres,
        Target::DaprdSqlite,
        Target::DaprdMemory,
    ];

    pub const ALL: [Target; 16] = [
        Target::Roost,
        Target::RoostEventual,
        Target::Embedded,
        Target::EmbeddedEventual,
        Target::EmbeddedNowal,
        Target::Redis,
        Target::RedisNopersist,
        Target::Postgres,
        Target::PostgresAsync,
        Target::Sqlite,
        Target::DaprdRoost,
        Target::DaprdRedis,
        Target::DaprdRedisNopersist,
        Target::DaprdPostgres,
        Target::DaprdSqlite,
        Target::DaprdMemory,
    ];

    pub fn is_daprd(self) -> bool {
        Target::DAPRD.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Roost => "roost",
            Target::RoostEventual => "roost-eventual",
            Target::RoostBaseline => "roost-baseline",
            Target::Embedded => "embedded",
            Target::EmbeddedEventual => "embedded-eventual",
            Target::EmbeddedNowal => "embedded-nowal",
            Target::Redis => "redis",
            Target::RedisNopersist => "redis-nopersist",
            Target::Postgres => "postgres",
            Target::PostgresAsync => "postgres-async",
            Target::Sqlite => "sqlite",
            Target::DaprdRoost => "daprd-roost",
            Target::DaprdRoostBaseline => "daprd-roost-baseline",
            Target::DaprdRedis => "daprd-redis",
            Target::DaprdRedisNopersist => "daprd-redis-nopersist",
            Target::DaprdPostgres => "daprd-postgres",
            Target::DaprdSqlite => "daprd-sqlite",
            Target::DaprdMemory => "daprd-memory",
        }
    }

    /// When a write is acknowledged, in words.
    pub fn durability(self) -> &'static str {
        match self {
            Target::Roost | Target::RoostBaseline | Target::Embedded => {
                "fsync per batch: write-ahead log append (group commit)"
            }
            Target::EmbeddedNowal => "fsync per batch: redb durable commit (group commit)",
            Target::RoostEventual | Target::EmbeddedEventual => "relaxed: flushed within 100 ms",
            Target::Redis => "fsync per write (appendfsync always)",
            Target::RedisNopersist => "none: memory only",
            Target::Postgres => "fsync per commit (synchronous_commit on)",
            Target::PostgresAsync => "relaxed: WAL flushed within 600 ms (synchronous_commit off)",
            Target::Sqlite => "fsync per commit (WAL, synchronous FULL)",
            Target::DaprdRoost | Target::DaprdRoostBaseline => {
                "fsync before the ack (immediate), behind daprd"
            }
            Target::DaprdRedis => "fsync per write (appendfsync always), behind daprd",
            Target::DaprdRedisNopersist => "none: memory only, behind daprd",
            Target::DaprdPostgres => "fsync per commit (synchronous_commit on), behind daprd",
            Target::DaprdSqlite => "the component's defaults (WAL), in daprd",
            Target::DaprdMemory => "none: daprd's memory",
        }
    }

    /// The durability tier used to pair targets in comparisons.
    pub fn tier(self) -> &'static str {
        match self {
            Target::Roost
            | Target::RoostBaseline
            | Target::Embedded
            | Target::EmbeddedNowal
            | Target::Redis
            | Target::Postgres
            | Target::Sqlite
            | Target::DaprdRoost
            | Target::DaprdRoostBaseline
            | Target::DaprdRedis
            | Target::DaprdPostgres
            | Target::DaprdSqlite => "durable",
            Target::RoostEventual
            | Target::EmbeddedEventual
            | Target::RedisNopersist
            | Target::PostgresAsync
            | Target::DaprdRedisNopersist
            | Target::DaprdMemory => "relaxed",
        }
    }

    /// How the harness reaches the store.
    pub fn transport(self) -> &'static str {
        match self {
            Target::Roost | Target::RoostEventual | Target::RoostBaseline => {
                "gRPC over a Unix socket (components API)"
            }
            Target::Embedded | Target::EmbeddedEventual | Target::EmbeddedNowal => "in-process",
            Target::Redis | Target::RedisNopersist => "RESP over loopback TCP",
            Target::Postgres | Target::PostgresAsync => "PostgreSQL protocol over loopback TCP",
            Target::Sqlite => "in-process library (the component links SQLite)",
            _ => "Dapr gRPC API over loopback TCP, through daprd",
        }
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Workload {
    /// The protocol's cheapest round trip (the transport floor).
    Ping,
    /// Get of a random preloaded key.
    Get,
    /// Unconditional set (last-write) of a random preloaded key.
    Set,
    /// Read-CAS: get a random key, then set it with the etag read.
    SetEtag,
    /// 90 % get, 10 % set.
    Mixed,
    /// Bulk get of 100 random keys.
    BulkGet,
    /// A transaction of 10 sets.
    Txn,
    /// First-write set of a new key.
    FirstWrite,
    /// Query EQ over the JSON documents, with a secondary index on the field (Roost).
    QueryIndexed,
    /// Query EQ over the JSON documents without an index (a full scan).
    QueryScan,
}

impl Workload {
    pub const ALL: [Workload; 10] = [
        Workload::Ping,
        Workload::Get,
        Workload::Set,
        Workload::SetEtag,
        Workload::Mixed,
        Workload::BulkGet,
        Workload::Txn,
        Workload::FirstWrite,
        Workload::QueryIndexed,
        Workload::QueryScan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Ping => "ping",
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::SetEtag => "set-etag",
            Workload::Mixed => "mixed",
            Workload::BulkGet => "bulk-get",
            Workload::Txn => "txn",
            Workload::FirstWrite => "first-write",
            Workload::QueryIndexed => "query-indexed",
            Workload::QueryScan => "query-scan",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Workload::Ping => {
                "the protocol's cheapest round trip: Roost's Ping RPC, Redis PING, PostgreSQL SELECT 1 (the transport floor)"
            }
            Workload::Get => "get of a random preloaded key",
            Workload::Set => "set (last-write, no etag) of a random preloaded key",
            Workload::SetEtag => {
                "read-CAS: get a random key, set it with the etag read (both round trips timed)"
            }
            Workload::Mixed => "90 % get / 10 % set of random preloaded keys",
            Workload::BulkGet => "bulk get of 100 random keys",
            Workload::Txn => "transaction of 10 sets of random keys (sorted)",
            Workload::FirstWrite => "first-write set of a new key",
            Workload::QueryIndexed => {
                "query EQ on one JSON field (~10 of the documents match), with a secondary index"
            }
            Workload::QueryScan => {
                "query EQ on one JSON field (~10 of the documents match), no index (full scan)"
            }
        }
    }

    /// Whether `target` can run this workload; the reason when not.
    pub fn unsupported_by(self, target: Target) -> Option<&'static str> {
        let query_capable = matches!(target, Target::Roost | Target::Embedded);
        if target.is_daprd() {
            return match self {
                Workload::Ping => Some("daprd's API has no ping"),
                Workload::QueryIndexed | Workload::QueryScan => match target {
                    Target::DaprdRoost | Target::DaprdRoostBaseline => None,
                    Target::DaprdRedis | Target::DaprdRedisNopersist => Some(
                        "state.redis queries need RedisJSON + RediSearch (not in redis-server)",
                    ),
                    Target::DaprdPostgres => Some("state.postgresql v2 has no query API"),
                    Target::DaprdSqlite => Some("state.sqlite has no query API"),
                    _ => Some("state.in-memory has no query API"),
                },
                _ => None,
            };
        }
        match self {
            Workload::QueryIndexed if !query_capable => Some(match target {
                Target::Postgres | Target::PostgresAsync => {
                    "state.postgresql v1 creates no field indexes; v2 has no query API"
                }
                Target::Redis | Target::RedisNopersist => {
                    "state.redis queries need RedisJSON + RediSearch (not in redis-server)"
                }
                Target::Sqlite => "state.sqlite has no query API",
                _ => "queries are measured on the immediate-durability keyspace only",
            }),
            Workload::QueryScan if !(query_capable || target == Target::Postgres) => {
                Some(match target {
                    Target::Redis | Target::RedisNopersist => {
                        "state.redis queries need RedisJSON + RediSearch (not in redis-server)"
                    }
                    Target::Sqlite => "state.sqlite has no query API",
                    _ => "queries are measured on one keyspace per store",
                })
            }
            _ => None,
        }
    }

    pub fn is_query(self) -> bool {
        matches!(self, Workload::QueryIndexed | Workload::QueryScan)
    }
}

/// The run's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub targets: Vec<Target>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    #[serde(serialize_with = "serialize_duration")]
    pub duration: Duration,
    /// Preloaded keys, and JSON documents for the query workloads.
    pub keys: usize,
    pub value_size: usize,
    /// The other build's harness binary serving `roost-baseline`.
    pub baseline_server: Option<std::path::PathBuf>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl serde::Serialize for Workload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, ""), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn only_query_capable_targets_run_queries() {
        assert!(
            Workload::QueryIndexed
                .unsupported_by(Target::Roost)
                .is_none()
        );
        assert!(
            Workload::QueryIndexed
                .unsupported_by(Target::Postgres)
                .is_some()
        );
        assert!(
            Workload::QueryScan
                .unsupported_by(Target::Postgres)
                .is_none()
        );
        assert!(Workload::QueryScan.unsupported_by(Target::Redis).is_some());
        assert!(Workload::QueryScan.unsupported_by(Target::Sqlite).is_some());
        for target in Target::ALL {
            assert!(Workload::Get.unsupported_by(target).is_none());
            assert!(Workload::Txn.unsupported_by(target).is_none());
        }
    }
}
