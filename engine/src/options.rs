//! How a database is opened: file, durability, cache, limits, expiry sweeping, clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::codec::CodecOptions;
use crate::record::MAX_CONTENT_TYPE_BYTES;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Acknowledged only after the batch holding it is on disk (one fsync per batch).
    #[default]
    Immediate,
    /// Acknowledged once applied in memory; a background flush makes it durable within
    /// `max_delay`. A crash can lose the writes acknowledged during the last `max_delay`
    /// (plus the time of one flush), never more, and never a part of a transaction.
    Eventual { max_delay: Duration },
}

impl Durability {
    /// `eventual` with the default 100 ms loss window.
    pub const EVENTUAL: Durability = Durability::Eventual {
        max_delay: Duration::from_millis(100),
    };
}

/// Size limits enforced on every request, so no client can make the engine allocate without
/// bound. `0` disables a limit where noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes (default 4096). Keys are never empty.
    pub max_key_bytes: usize,
    /// Largest value in bytes (default 4 MiB, what daprd can receive back in one response).
    pub max_value_bytes: usize,
    /// Most operations in one transaction (default 0 = no limit).
    pub max_transaction_ops: usize,
    /// Most items in one bulk get / set / delete (default 10 000).
    pub max_bulk_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 4 * 1024 * 1024,
            max_transaction_ops: 0,
            max_bulk_items: 10_000,
        }
    }
}

impl Limits {
    pub const MAX_CONTENT_TYPE_BYTES: usize = MAX_CONTENT_TYPE_BYTES;
}

/// Opens a redb database on a caller-supplied storage backend (taken once).
type BackendOpener =
    Box<dyn FnOnce(&redb::Builder) -> Result<redb::Database, redb::DatabaseError> + Send>;

/// A storage backend handed to [`Options::storage_backend`], used by the next open.
#[derive(Clone)]
pub(crate) struct BackendSlot(Arc<std::sync::Mutex<Option<BackendOpener>>>);

impl BackendSlot {
    pub fn take(&self) -> Option<BackendOpener> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for BackendSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageBackend(..)")
    }
}

/// The default size of redb's page cache: it fills as pages are read, up to this size.
/// 64 MiB made one-thread reads of a 100 000 × 1 KiB keyspace (≈ 110 MiB) 2.1× slower in the
/// same run (misses cost a file read and an eviction each). 512 MiB ran 6–11 % more 10-op
/// transactions at 1 000 000 × 1 KiB and 8 % more at 100 000, but redb then keeps more dirty
/// pages for each checkpoint: at 100 000 keys checkpoints took 273–292 ms instead of
/// 218–229, p99.9 rose from 18.7–19.1 to 19.9–20.4 ms and the slowest call from 24–31 to
/// 42–55 ms (BENCHMARKS.md). The default keeps the tail; `cacheSizeMB` buys the throughput.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// The write-ahead log size (applied to redb since the last checkpoint) at which catch-up
/// checkpoints, unless [`Options::checkpoint_log_bytes`] says otherwise. A checkpoint writes
/// every page dirtied since the last one (0.2–0.6 s for a 100 000 × 1 KiB keyspace under
/// random writes on our 2-core VM); writers go on meanwhile, into the table of unapplied
/// writes. A larger log means fewer checkpoints and a longer replay after a crash: replaying
/// a 123 MiB log took 2.4 s (BENCHMARKS.md, "Checkpoints").
pub const DEFAULT_CHECKPOINT_LOG_BYTES: u64 = 128 * 1024 * 1024;

/// The most memory the table of acknowledged writes not yet applied to redb may hold before
/// writers wait for catch-up, unless [`Options::max_unapplied_bytes`] says otherwise. A
/// checkpoint of 0.6 s under 64 clients of 10-op transactions leaves about 25 MiB there.
pub const DEFAULT_MAX_UNAPPLIED_BYTES: u64 = 256 * 1024 * 1024;

/// The write-back chunk of the main file, unless [`Options::writeback_chunk_bytes`] says
/// otherwise: pages that redb hands to the file are sent to the disk about this many bytes at
/// a time, so the write-ahead log's fdatasync waits behind one chunk at most.
pub const DEFAULT_WRITEBACK_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Options for [`crate::Database::open`]. Start from [`Options::new`] and chain setters.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) path: PathBuf,
    pub(crate) create_if_missing: bool,
    pub(crate) durability: Durability,
    pub(crate) cache_size_bytes: usize,
    pub(crate) limits: Limits,
    pub(crate) check_integrity_on_open: bool,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) sweep_batch: usize,
    pub(crate) max_batch_requests: usize,
    pub(crate) write_queue_capacity: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) indexes: Vec<String>,
    pub(crate) codec: CodecOptions,
    pub(crate) backend: Option<BackendSlot>,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) checkpoint_log_bytes: u64,
    pub(crate) write_ahead_log: bool,
    pub(crate) max_unapplied_bytes: u64,
    pub(crate) writeback_chunk_bytes: u64,
    pub(crate) crash_at: Option<Arc<CrashAt>>,
}

/// A step of the logged write path where a crash test may abort the process.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// A batch is in the log, not yet in the overlay nor acknowledged.
    AfterLogAppend,
    /// Catch-up committed a step to redb (no fsync), before removing it from the overlay.
    AfterApply,
    /// Catch-up is about to run a checkpoint's durable commit.
    BeforeCheckpoint,
    /// The checkpoint is durable; the log it covers is not deleted yet.
    AfterCheckpoint,
    /// The log a checkpoint covers was just deleted.
    AfterLogTruncate,
}

/// Aborts the process the `nth` time `point` is reached (crash tests only).
#[doc(hidden)]
#[derive(Debug)]
pub struct CrashAt {
    point: CrashPoint,
    nth: u64,
    reached: std::sync::atomic::AtomicU64,
}

impl CrashAt {
    pub(crate) fn reached(crash: &Option<Arc<CrashAt>>, point: CrashPoint) {
        if let Some(crash) = crash
            && crash.point == point
            && crash
                .reached
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1
                == crash.nth
        {
            std::process::abort();
        }
    }
}

impl Options {
    /// Defaults: create if missing, `Immediate` durability, 256 MiB cache, default [`Limits`],
    /// integrity check on open, expired records swept every second in batches of 1000,
    /// group commit of up to 1024 requests, the system clock.
    pub fn new(path: impl AsRef<Path>) -> Options {
        Options {
            path: path.as_ref().to_path_buf(),
            create_if_missing: true,
            durability: Durability::default(),
            cache_size_bytes: DEFAULT_CACHE_BYTES,
            limits: Limits::default(),
            check_integrity_on_open: true,
            sweep_interval: Some(Duration::from_secs(1)),
            sweep_batch: 1000,
            max_batch_requests: 1024,
            write_queue_capacity: 4096,
            clock: Arc::new(SystemClock),
            indexes: Vec::new(),
            codec: CodecOptions::default(),
            backend: None,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_log_bytes: DEFAULT_CHECKPOINT_LOG_BYTES,
            write_ahead_log: true,
            max_unapplied_bytes: DEFAULT_MAX_UNAPPLIED_BYTES,
            writeback_chunk_bytes: DEFAULT_WRITEBACK_CHUNK_BYTES,
            crash_at: None,
        }
    }

    /// Aborts the process the `nth` time the write path reaches `point` (for crash tests).
    #[doc(hidden)]
    pub fn abort_at(mut self, point: CrashPoint, nth: u64) -> Options {
        self.crash_at = Some(Arc::new(CrashAt {
            point,
            nth,
            reached: std::sync::atomic::AtomicU64::new(0),
        }));
        self
    }

    /// Whether writes go through the write-ahead log: `Immediate` durability on a file with
    /// the log on. (A custom storage backend has no file to put a log beside.)
    pub(crate) fn logs(&self) -> bool {
        self.write_ahead_log
            && self.backend.is_none()
            && matches!(self.durability, Durability::Immediate)
    }

    /// The size at which the writer starts a new log segment: a quarter of the checkpoint
    /// size, so a checkpoint frees whole segments (at least 4 KiB).
    pub(crate) fn log_segment_bytes(&self) -> u64 {
        (self.checkpoint_log_bytes / 4).max(4 * 1024)
    }

    /// With the write-ahead log, the most memory (bytes of keys, records and index entries)
    /// that acknowledged writes not yet applied to redb may hold (default
    /// [`DEFAULT_MAX_UNAPPLIED_BYTES`], 256 MiB). When it is full, writers wait for catch-up;
    /// the wait is measured (`Database::writer_metrics`). Replay after a crash re-applies at
    /// most this much plus one checkpoint's log.
    pub fn max_unapplied_bytes(mut self, bytes: u64) -> Options {
        self.max_unapplied_bytes = bytes;
        self
    }

    /// How the main file's pages reach the disk (default [`DEFAULT_WRITEBACK_CHUNK_BYTES`],
    /// 4 MiB): a checkpoint writes back what redb wrote to the file this many bytes at a time,
    /// waiting for each chunk, before its fdatasync; between checkpoints a background thread
    /// does the same once more than 16 chunks wait. So the write-ahead log's fdatasync (which
    /// acknowledges writes) never queues behind a whole checkpoint's pages. `0` leaves all of
    /// it to the checkpoint's fdatasync. Durability is the same either way. (Linux only;
    /// elsewhere the fdatasync does it all.)
    pub fn writeback_chunk_bytes(mut self, bytes: u64) -> Options {
        self.writeback_chunk_bytes = bytes;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fail with an error instead of creating a new database when the file does not exist.
    pub fn create_if_missing(mut self, yes: bool) -> Options {
        self.create_if_missing = yes;
        self
    }

    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Memory for redb's page cache.
    pub fn cache_size_bytes(mut self, bytes: usize) -> Options {
        self.cache_size_bytes = bytes;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Options {
        self.limits = limits;
        self
    }

    /// With `Immediate` durability, how long a batch may stay only in the write-ahead log
    /// before a checkpoint writes it durably into the main file (checked while the writer is
    /// idle; the log is also checkpointed when it reaches [`Options::checkpoint_log_bytes`], on
    /// `sync` and at close). Longer means
    /// fewer full-file fsyncs and a longer replay after a crash. Default 1 s.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Options {
        self.checkpoint_interval = interval;
        self
    }

    /// With `Immediate` durability, the write-ahead log size (applied to redb since the last
    /// checkpoint) at which catch-up checkpoints even while busy (default
    /// [`DEFAULT_CHECKPOINT_LOG_BYTES`], 128 MiB). Larger means fewer checkpoints under
    /// sustained writes, a longer replay after a crash and more log on disk.
    pub fn checkpoint_log_bytes(mut self, bytes: u64) -> Options {
        self.checkpoint_log_bytes = bytes;
        self
    }

    /// With `Immediate` durability, whether batches go through the write-ahead log (the
    /// default) or each commits to redb with its own fsync (slower; kept for comparison). A log
    /// left by an earlier run is replayed either way.
    pub fn write_ahead_log(mut self, yes: bool) -> Options {
        self.write_ahead_log = yes;
        self
    }

    /// Verify every page checksum when opening (default on). Off makes opening a large file
    /// faster, but a file damaged outside Roost may then only be detected when read.
    pub fn check_integrity_on_open(mut self, yes: bool) -> Options {
        self.check_integrity_on_open = yes;
        self
    }

    /// How often the background sweeper deletes expired records; `None` turns it off (expired
    /// records stay invisible; [`crate::Database::sweep_expired`] deletes them on demand).
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Options {
        self.sweep_interval = interval;
        self
    }

    /// Most expired records deleted in one write transaction by the sweeper.
    pub fn sweep_batch(mut self, records: usize) -> Options {
        self.sweep_batch = records.max(1);
        self
    }

    /// Most requests group-committed in one write transaction.
    pub fn max_batch_requests(mut self, requests: usize) -> Options {
        self.max_batch_requests = requests.max(1);
        self
    }

    /// Requests that may wait for the writer before senders are held back.
    pub fn write_queue_capacity(mut self, requests: usize) -> Options {
        self.write_queue_capacity = requests.max(1);
        self
    }

    /// Dot paths (`"person.org"`) to keep secondary indexes on. Indexes are built for
    /// existing records at open when first declared, and dropped when no longer declared.
    pub fn indexes<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Options {
        self.indexes = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Compression and encryption at rest (see [`crate::CodecOptions`]).
    pub fn codec(mut self, codec: CodecOptions) -> Options {
        self.codec = codec;
        self
    }

    /// Store the database on `backend` instead of the file at the path (which then only names
    /// the database in messages). For fault-injection tests and special storage; the backend
    /// is used by the first `open` with these options.
    pub fn storage_backend<B: redb::StorageBackend>(mut self, backend: B) -> Options {
        let opener: BackendOpener = Box::new(move |builder| builder.create_with_backend(backend));
        self.backend = Some(BackendSlot(Arc::new(std::sync::Mutex::new(Some(opener)))));
        self
    }

    /// The clock deciding expiry; tests pass a [`crate::ManualClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Options {
        self.clock = clock;
        self
    }
}
