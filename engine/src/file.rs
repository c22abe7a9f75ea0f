//! The main file as redb's storage: redb's own file backend, with the write-back of its pages
//! paced so that the write-ahead log's fdatasync never queues behind a checkpoint's burst.
//!
//! redb keeps the pages of non-durable commits in its write buffer and hands them to the file
//! when the buffer is over budget or at a durable commit (a checkpoint), whose fdatasync then
//! sends every page dirtied since the last one to the disk at once: hundreds of MiB under random
//! writes on a large keyspace. On one disk the log's fdatasync, which acknowledges writes, then
//! waits behind that burst (appends of 26–175 ms during checkpoints, `BENCHMARKS.md`).
//!
//! [`PacedFile`] passes every call to redb's [`redb::backends::FileBackend`] and notes which
//! regions of the file each write dirtied. A `sync_data` (redb's durable commits: the
//! checkpoint) starts the write-back of what is noted with `sync_file_range` and waits for
//! it, one chunk of about `chunk` bytes at a time, then calls the file backend's fdatasync,
//! which finds the pages written. So the disk gets the main file's pages a chunk at a time,
//! and the log's fdatasync waits behind one chunk at most. Between checkpoints, once more
//! than [`BACKLOG_CHUNKS`] chunks are noted (redb's write buffer overflowing into the file, on
//! keyspaces larger than its cache), a background thread writes back chunks the same way,
//! keeping that backlog, so the checkpoint has less left to write.
//!
//! Durability does not depend on any of this: `sync_data` ends with the fdatasync redb's file
//! backend always does, which writes whatever is still dirty. `sync_file_range` runs on a file
//! description of its own (opened from the same path, checked to be the same file), so a
//! write-back error it sees is still reported to redb's fdatasync; a failed `sync_file_range`
//! also fails the next `sync_data`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The granularity of the dirty-region map: one entry per MiB of the file that was written.
const REGION_BYTES: u64 = 1 << 20;

/// How many chunks may wait, written to the file but not written back, before the background
/// thread starts on them. Written back at once, every page redb writes between checkpoints
/// reached the disk (15 % more writes at 100 000 keys, and 5 % fewer transactions); left to
/// the checkpoint alone, the checkpoint's write-back took so long at 1 000 000 keys that
/// writers filled the table of unapplied writes (`BENCHMARKS.md`).
const BACKLOG_CHUNKS: u64 = 16;

/// redb's file backend with paced write-back (see the module documentation).
pub(crate) struct PacedFile {
    inner: FileBackend,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    /// The separate file description `sync_file_range` runs on.
    writeback: File,
    chunk: u64,
    /// Regions written and not yet written back: region index → bytes written into it.
    dirty: Mutex<Dirty>,
    wake: Condvar,
    stop: AtomicBool,
    /// A `sync_file_range` failure, reported by the next `sync_data`.
    failed: Mutex<Option<std::io::Error>>,
    /// Bytes whose write-back this backend started (the metric
    /// `roost_main_file_written_back_bytes_total`).
    written_back: Arc<AtomicU64>,
}

#[derive(Default)]
struct Dirty {
    regions: BTreeMap<u64, u64>,
    bytes: u64,
}

impl PacedFile {
    /// Opens `path` (created when `create`) for redb, pacing write-back in chunks of `chunk`
    /// bytes; `written_back` counts the bytes whose write-back it started.
    pub fn open(
        path: &Path,
        create: bool,
        chunk: u64,
        written_back: Arc<AtomicU64>,
    ) -> std::io::Result<PacedFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let writeback = File::open(path)?;
        if !same_file(&file, &writeback)? {
            return Err(std::io::Error::other(format!(
                "{} was replaced while it was being opened",
                path.display()
            )));
        }
        let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            writeback,
            chunk: chunk.max(REGION_BYTES),
            dirty: Mutex::new(Dirty::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
            written_back,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("roost-writeback".into())
                .spawn(move || shared.run())?
        };
        Ok(PacedFile {
            inner,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn stop_thread(&self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _dirty = lock(&self.shared.dirty);
            self.shared.wake.notify_all();
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The noted bytes above which the background thread writes back.
    fn backlog(&self) -> u64 {
        self.chunk.saturating_mul(BACKLOG_CHUNKS)
    }

    /// The background thread: writes back a chunk whenever more than the backlog is noted.
    fn run(&self) {
        loop {
            {
                let mut dirty = lock(&self.dirty);
                while dirty.bytes < self.backlog() && !self.stop.load(Ordering::Acquire) {
                    dirty = self.wake.wait(dirty).unwrap_or_else(|p| p.into_inner());
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            self.write_back_chunk();
        }
    }

    fn note(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut dirty = lock(&self.dirty);
        let first = offset / REGION_BYTES;
        let last = (offset + len - 1) / REGION_BYTES;
        for region in first..=last {
            let start = (region * REGION_BYTES).max(offset);
            let end = ((region + 1) * REGION_BYTES).min(offset + len);
            *dirty.regions.entry(region).or_default() += end - start;
        }
        dirty.bytes += len;
        if dirty.bytes >= self.backlog() {
            self.wake.notify_one();
        }
    }

    /// Takes about one chunk of noted regions (in file order), starts their write-back, then
    /// waits for it. Returns false when nothing was noted.
    fn write_back_chunk(&self) -> bool {
        let mut regions = Vec::new();
        {
            let mut dirty = lock(&self.dirty);
            let mut taken = 0;
            while taken < self.chunk {
                let Some((region, bytes)) = dirty.regions.pop_first() else {
                    break;
                };
                taken += bytes;
                regions.push(region);
            }
            dirty.bytes = dirty.bytes.saturating_sub(taken);
            if regions.is_empty() {
                dirty.bytes = 0;
                return false;
            }
            self.written_back.fetch_add(taken, Ordering::Relaxed);
        }
        let mut result = Ok(());
        for &region in &regions {
            result = result.and(sync_range(
                &self.writeback,
                region * REGION_BYTES,
                RangeStep::Start,
            ));
        }
        for &region in &regions {
            result = result.and(sync_range(
                &self.writeback,
                region * REGION_BYTES,
                RangeStep::Wait,
            ));
        }
        if let Err(error) = result {
            lock(&self.failed).get_or_insert(error);
        }
        true
    }
}

#[derive(Clone, Copy)]
enum RangeStep {
    /// Start write-back of the region's dirty pages.
    Start,
    /// Wait for the region's write-back to finish (and start what is dirty again).
    Wait,
}

#[cfg(target_os = "linux")]
fn sync_range(file: &File, offset: u64, step: RangeStep) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = match step {
        RangeStep::Start => libc::SYNC_FILE_RANGE_WRITE,
        RangeStep::Wait => {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        }
    };
    // SAFETY: a plain system call on a file descriptor this function borrows.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            REGION_BYTES as libc::off64_t,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no range write-back: the final fdatasync does all of it.
#[cfg(not(target_os = "linux"))]
fn sync_range(_file: &File, _offset: u64, _step: RangeStep) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &File, b: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(not(unix))]
fn same_file(_a: &File, _b: &File) -> std::io::Result<bool> {
    Ok(true)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl fmt::Debug for PacedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedFile")
            .field("chunk", &self.shared.chunk)
            .finish_non_exhaustive()
    }
}

impl Drop for PacedFile {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl StorageBackend for PacedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        while self.shared.write_back_chunk() {}
        if let Some(error) = lock(&self.shared.failed).take() {
            return Err(error);
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        self.shared.note(offset, data.len() as u64);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.stop_thread();
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
