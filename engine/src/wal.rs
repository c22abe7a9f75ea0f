//! The write-ahead log in front of redb, for `Durability::Immediate` on a file.
//!
//! Why: a durable redb commit rewrites the B-tree pages on the path to every changed key and
//! fsyncs the file; appending a batch's final records to a log and fsyncing that is one
//! sequential write. So the writer (1) appends each batch here and fdatasyncs it, (2) shows it
//! to readers in the overlay, (3) acknowledges it; catch-up applies it to redb later and
//! checkpoints (one durable redb commit), after which the segments the checkpoint covers are
//! deleted. On open, records newer than the checkpointed sequence are re-applied.
//! `docs/design.md` §5b argues the crash cases.
//!
//! Files `<database>-wal.<first batch sequence, 20 digits>` (segments, a quarter of the
//! checkpoint size each; the single `<database>-wal` of older builds is read first), each a
//! sequence of records. A segment that a checkpoint covers is not deleted but kept as a
//! *spare* (`<database>-wal.spare.<n>`, at most [`MAX_SPARES`]) and renamed into place at the
//! next rotation: the writer then overwrites blocks the file already has, so its fdatasync
//! writes data only — no size change, no block allocation, no file-system journal commit
//! queued behind a checkpoint's writeback. Spares belong to one run: opening the database
//! deletes them.
//!
//! ```text
//! len u32 LE (bytes after the crc) ‖ crc32 u32 LE (of those bytes) ‖
//! seq u64 LE ‖ last_etag u64 LE ‖ op count u32 LE ‖ ops…
//! op: key len u32 LE ‖ key ‖ record len u32 LE (u32::MAX = delete) ‖ sealed record
//! ```
//!
//! Records carry the *sealed* envelope (compressed and encrypted exactly as stored), never
//! plaintext. Reading a segment stops at the first record that is short, fails its checksum, or does
//! not carry the next sequence number: that is the torn tail of a write that was never
//! acknowledged, or what a recycled segment held before (its records are older, so their
//! sequence numbers never continue the run). The next segment is read only if it continues
//! the sequence, and the first batch newer than the checkpoint must be the one right after
//! it: a log that does not continue the main file is not replayed.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One key's final state in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalOp {
    /// The key now holds this sealed record.
    Put {
        key: Vec<u8>,
        record: Vec<u8>,
    },
    Remove {
        key: Vec<u8>,
    },
}

/// One batch as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalBatch {
    pub seq: u64,
    pub last_etag: u64,
    pub ops: Vec<WalOp>,
}

const DELETE: u32 = u32::MAX;
const HEADER: usize = 8;
/// The most a record may claim to hold; anything larger is a torn or foreign length.
const MAX_RECORD_BYTES: usize = 1 << 30;

impl WalOp {
    pub fn key(&self) -> &[u8] {
        match self {
            WalOp::Put { key, .. } | WalOp::Remove { key } => key,
        }
    }

    /// Bytes the op takes in the log.
    pub fn logged_len(&self) -> u64 {
        match self {
            WalOp::Put { key, record } => (8 + key.len() + record.len()) as u64,
            WalOp::Remove { key } => (8 + key.len()) as u64,
        }
    }
}

/// The single log file of databases written before the log was split into segments; read
/// (first) on open, never written.
fn legacy_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The segment whose first batch is `first_seq`: `<database>-wal.<first_seq, 20 digits>`.
fn segment_path(db_path: &Path, first_seq: u64) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(format!("-wal.{first_seq:020}"));
    PathBuf::from(name)
}

/// The most checkpointed segments kept for reuse: a checkpoint covers about four (segments
/// are a quarter of the checkpoint size), and the writer takes one at each rotation.
pub(crate) const MAX_SPARES: usize = 4;

/// A spare segment: `<database>-wal.spare.<n>`.
fn spare_path(db_path: &Path, n: u64) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(format!("-wal.spare.{n}"));
    PathBuf::from(name)
}

/// The spare segments beside the database at `db_path` (disk the log keeps for reuse; they
/// hold no batch that replay would read).
pub(crate) fn spare_files(db_path: &Path) -> Vec<PathBuf> {
    let Some(name) = db_path.file_name() else {
        return Vec::new();
    };
    let prefix = format!("{}-wal.spare.", name.to_string_lossy());
    let mut files: Vec<PathBuf> = std::fs::read_dir(parent_dir(db_path))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The log files beside the database at `db_path` that exist now, oldest first.
pub fn log_files(db_path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let legacy = legacy_path(db_path);
    if legacy.exists() {
        files.push((0u64, legacy));
    }
    let Some(name) = db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    let dir = parent_dir(db_path);
    let prefix = format!("{name}-wal.");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = file
                .strip_prefix(&prefix)
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
            {
                files.push((first, entry.path()));
            }
        }
    }
    files.sort();
    files.into_iter().map(|(_, path)| path).collect()
}

/// The bytes of log records in the log files of the database at `db_path`: what a replay
/// would read, at most (a segment's file may be larger: reused segments keep their size).
pub(crate) fn record_bytes(db_path: &Path) -> std::io::Result<u64> {
    Ok(read_log(db_path, u64::MAX)?.1)
}

/// Deletes every log file of the database at `db_path`, spares included (and syncs the
/// directory).
pub fn remove_log_files(db_path: &Path) -> std::io::Result<()> {
    for file in log_files(db_path).into_iter().chain(spare_files(db_path)) {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    sync_parent(db_path)
}

/// Creates the (empty) segment whose first batch is `first_seq`, its directory entry durable.
fn new_segment(db_path: &Path, first_seq: u64) -> std::io::Result<(PathBuf, File)> {
    let path = segment_path(db_path, first_seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    sync_parent(db_path)?;
    Ok((path, file))
}

/// Opens the spare `spare` under the segment name for `first_seq`, its directory entry
/// durable. Its old records stay until overwritten; none continues the new sequence.
fn reuse_spare(db_path: &Path, spare: &Path, first_seq: u64) -> std::io::Result<(PathBuf, File)> {
    let path = segment_path(db_path, first_seq);
    std::fs::rename(spare, &path)?;
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    sync_parent(db_path)?;
    Ok((path, file))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

/// The batches after `checkpointed_seq` in every log file of the database, in order. A
/// segment is read up to its first torn or out-of-sequence record; the next one only if it
/// continues the sequence.
pub(crate) fn read_all(db_path: &Path, checkpointed_seq: u64) -> std::io::Result<Vec<WalBatch>> {
    Ok(read_log(db_path, checkpointed_seq)?.0)
}

/// Reads the log as [`read_all`] describes: the batches after `checkpointed_seq`, and the
/// bytes of every record read (checkpointed ones too).
fn read_log(db_path: &Path, checkpointed_seq: u64) -> std::io::Result<(Vec<WalBatch>, u64)> {
    let mut batches = Vec::new();
    let mut read = 0;
    let mut expected: Option<u64> = None;
    for path in log_files(db_path) {
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let (valid, next) = decode_from(&bytes, checkpointed_seq, expected, &mut batches);
        read += valid as u64;
        if expected.is_some() && next == expected {
            // The segment held nothing that continues the run: the log ends here.
            break;
        }
        expected = next.or(expected);
    }
    Ok((batches, read))
}

/// The log's segments, shared by the writer (which appends to the open one and closes it when
/// full) and catch-up (which deletes what a checkpoint covers).
#[derive(Debug)]
pub(crate) struct Segments {
    db_path: PathBuf,
    segment_bytes: u64,
    /// Closed segments, oldest first, with the last batch each holds.
    closed: Mutex<Vec<(PathBuf, u64)>>,
    /// Checkpointed segments kept for reuse, and the number the next one is named with.
    spares: Mutex<(Vec<PathBuf>, u64)>,
    open: Mutex<OpenSegment>,
}

#[derive(Debug)]
struct OpenSegment {
    file: File,
    path: PathBuf,
    /// Bytes in the segment.
    len: u64,
    /// The last batch in it (0 if none).
    last_seq: u64,
    buffer: Vec<u8>,
}

impl Segments {
    /// Retires the log that a checkpoint through `seq` covers: the closed segments whose
    /// batches are all at or below it become spares (or are deleted once [`MAX_SPARES`] are
    /// kept), and the open segment is emptied in place if it holds nothing newer (its first
    /// record header zeroed; the writer writes from the start again). Neither needs a
    /// directory sync: a crash that forgets a rename leaves a segment of checkpointed batches,
    /// which replay skips. Returns the segments retired.
    pub fn remove_through(&self, seq: u64) -> std::io::Result<usize> {
        let mut removed = 0;
        {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            while let Some((path, last)) = closed.first() {
                if *last > seq {
                    break;
                }
                let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
                let full = std::fs::metadata(path).is_ok_and(|m| m.len() >= self.segment_bytes);
                let kept = if spares.0.len() < MAX_SPARES && full {
                    let spare = spare_path(&self.db_path, spares.1);
                    std::fs::rename(path, &spare)?;
                    spares.1 += 1;
                    spares.0.push(spare);
                    true
                } else {
                    false
                };
                drop(spares);
                if !kept {
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err),
                    }
                }
                closed.remove(0);
                removed += 1;
            }
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len > 0 && open.last_seq <= seq {
            open.file.write_all_at(&[0u8; HEADER], 0)?;
            open.file.sync_data()?;
            open.len = 0;
            removed += 1;
        }
        Ok(removed)
    }

    /// A spare to rename into place, if catch-up has retired one.
    fn take_spare(&self) -> Option<PathBuf> {
        self.spares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .pop()
    }

    /// Log bytes on disk.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner()).len;
        let closed: u64 = self
            .closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(path, _)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        open + closed
    }
}

/// The log the writer appends to: the open segment, rotated at `segment_bytes`.
pub(crate) struct Wal {
    shared: Arc<Segments>,
}

impl Wal {
    /// Starts a fresh log whose first batch will be `next_seq`, deleting every older log file
    /// (their batches are in the main file, durably, when this is called).
    pub fn create(db_path: &Path, next_seq: u64, segment_bytes: u64) -> std::io::Result<Wal> {
        remove_log_files(db_path)?;
        let (path, file) = new_segment(db_path, next_seq)?;
        Ok(Wal {
            shared: Arc::new(Segments {
                db_path: db_path.to_path_buf(),
                segment_bytes: segment_bytes.max(1),
                closed: Mutex::new(Vec::new()),
                spares: Mutex::new((Vec::new(), 0)),
                open: Mutex::new(OpenSegment {
                    file,
                    path,
                    len: 0,
                    last_seq: 0,
                    buffer: Vec::new(),
                }),
            }),
        })
    }

    /// The segments, for catch-up to delete what checkpoints cover.
    pub fn segments(&self) -> Arc<Segments> {
        Arc::clone(&self.shared)
    }

    /// Appends one batch and waits until it is on disk. A full segment is closed first and
    /// the batch starts the next one — a spare renamed into place when there is one, else a
    /// new file — whose directory entry is made durable before the batch.
    pub fn append<'a>(
        &mut self,
        batch_seq: u64,
        last_etag: u64,
        ops: impl ExactSizeIterator<Item = &'a WalOp>,
    ) -> std::io::Result<()> {
        let shared = &self.shared;
        let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len >= shared.segment_bytes {
            let (path, file) = match shared.take_spare() {
                Some(spare) => reuse_spare(&shared.db_path, &spare, batch_seq)?,
                None => new_segment(&shared.db_path, batch_seq)?,
            };
            let old = std::mem::replace(&mut open.path, path);
            open.file = file;
            let last = open.last_seq;
            open.len = 0;
            shared
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((old, last));
        }
        let open = &mut *open;
        open.buffer.clear();
        encode(&mut open.buffer, batch_seq, last_etag, ops);
        open.file.write_all_at(&open.buffer, open.len)?;
        open.file.sync_data()?;
        open.len += open.buffer.len() as u64;
        open.last_seq = batch_seq;
        Ok(())
    }

    /// Bytes in the open segment.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.shared.open.lock().unwrap().len
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn encode<'a>(
    out: &mut Vec<u8>,
    seq: u64,
    last_etag: u64,
    ops: impl ExactSizeIterator<Item = &'a WalOp>,
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&last_etag.to_le_bytes());
    put_u32(out, ops.len() as u32);
    for op in ops {
        match op {
            WalOp::Put { key, record } => {
                put_u32(out, key.len() as u32);
                out.extend_from_slice(key);
                put_u32(out, record.len() as u32);
                out.extend_from_slice(record);
            }
            WalOp::Remove { key } => {
                put_u32(out, key.len() as u32);
                out.extend_from_slice(key);
                put_u32(out, DELETE);
            }
        }
    }
    let body_len = (out.len() - start - HEADER) as u32;
    let crc = crc32(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The batches after `checkpointed_seq` and the length of the valid prefix of `bytes`.
#[cfg(test)]
fn decode_all(bytes: &[u8], checkpointed_seq: u64) -> (Vec<WalBatch>, usize) {
    let mut batches = Vec::new();
    let (valid, _) = decode_from(bytes, checkpointed_seq, None, &mut batches);
    (batches, valid)
}

/// Decodes the batches of one segment into `batches` (those after `checkpointed_seq`),
/// continuing a sequence that expects `expected` next (the previous segment's end). Returns
/// the length of the valid prefix and the sequence the next segment must start with.
fn decode_from(
    bytes: &[u8],
    checkpointed_seq: u64,
    mut expected: Option<u64>,
    batches: &mut Vec<WalBatch>,
) -> (usize, Option<u64>) {
    let mut at = 0;
    while let Some((batch, used)) = decode_one(&bytes[at..]) {
        // Sequence numbers are contiguous; a record that breaks the run is from an older
        // generation of the file.
        if expected.is_some_and(|next| batch.seq != next) {
            break;
        }
        // The first batch replay would apply must follow the checkpoint directly; a log
        // that skips ahead of the main file is not its own.
        if batch.seq > checkpointed_seq
            && batches.is_empty()
            && batch.seq != checkpointed_seq.saturating_add(1)
        {
            break;
        }
        expected = Some(batch.seq + 1);
        at += used;
        if batch.seq > checkpointed_seq {
            batches.push(batch);
        }
    }
    (at, expected)
}

fn decode_one(bytes: &[u8]) -> Option<(WalBatch, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if !(20..=MAX_RECORD_BYTES).contains(&len) {
        return None;
    }
    let body = bytes.get(HEADER..HEADER + len)?;
    if crc32(body) != crc {
        return None;
    }
    let mut r = Reader { bytes: body, at: 0 };
    let seq = r.u64()?;
    let last_etag = r.u64()?;
    let count = r.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let key_len = r.u32()? as usize;
        let key = r.take(key_len)?.to_vec();
        let record_len = r.u32()?;
        if record_len == DELETE {
            ops.push(WalOp::Remove { key });
        } else {
            let record = r.take(record_len as usize)?.to_vec();
            ops.push(WalOp::Put { key, record });
        }
    }
    if r.at != body.len() {
        return None;
    }
    Some((
        WalBatch {
            seq,
            last_etag,
            ops,
        },
        HEADER + len,
    ))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// CRC-32 (IEEE 802.3, reflected), table-driven.
/// CRC-32 (IEEE, the zlib polynomial) of `bytes`. crc32fast uses the CPU's carry-less
/// multiply where it has one: the byte-at-a-time table this replaced was a tenth of the
/// writer thread's time under 64 concurrent 1 KiB sets (BENCHMARKS.md). Same values, so logs
/// written before still replay.
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ops(n: u8) -> Vec<WalOp> {
        (0..n)
            .map(|i| {
                if i % 3 == 2 {
                    WalOp::Remove { key: vec![b'k', i] }
                } else {
                    WalOp::Put {
                        key: vec![b'k', i],
                        record: vec![i; 100 + i as usize],
                    }
                }
            })
            .collect()
    }

    fn log(batches: &[(u64, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, n) in batches {
            encode(&mut out, *seq, seq * 10, ops(*n).iter());
        }
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn batches_round_trip_and_skip_the_checkpointed_ones() {
        let bytes = log(&[(5, 3), (6, 0), (7, 4)]);
        let (batches, valid) = decode_all(&bytes, 5);
        assert_eq!(valid, bytes.len());
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].seq, 6);
        assert_eq!(batches[1].ops, ops(4));
        assert_eq!(batches[1].last_etag, 70);
    }

    #[test]
    fn a_torn_or_damaged_tail_ends_the_log() {
        let whole = log(&[(1, 2), (2, 2)]);
        let first_len = log(&[(1, 2)]).len();
        for cut in [first_len + 1, first_len + 8, whole.len() - 1] {
            let (batches, valid) = decode_all(&whole[..cut], 0);
            assert_eq!(batches.len(), 1, "cut at {cut}");
            assert_eq!(valid, first_len);
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert_eq!(decode_all(&flipped, 0).0.len(), 1);
        let mut garbage = whole.clone();
        garbage.extend_from_slice(&[0xff; 64]);
        assert_eq!(decode_all(&garbage, 0).1, whole.len());
    }

    #[test]
    fn a_break_in_the_sequence_is_an_older_generation() {
        // 3 → 4, then a stale 2 left behind after the file was emptied and rewritten.
        let bytes = log(&[(3, 1), (4, 1), (2, 1)]);
        let (batches, valid) = decode_all(&bytes, 2);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(valid, log(&[(3, 1), (4, 1)]).len());
    }

    #[test]
    fn segments_rotate_replay_in_order_and_go_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.roost");
        let mut wal = Wal::create(&db, 1, 300).unwrap();
        for seq in 1..=6 {
            wal.append(seq, seq, ops(2).iter()).unwrap();
        }
        let files = log_files(&db);
        assert!(files.len() >= 2, "no rotation: {files:?}");
        assert!(
            files[0]
                .to_string_lossy()
                .ends_with("db.roost-wal.00000000000000000001")
        );
        let all = read_all(&db, 0).unwrap();
        assert_eq!(
            all.iter().map(|b| b.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(read_all(&db, 4).unwrap().len(), 2);
        // A checkpoint through 3 deletes the closed segments holding only batches <= 3.
        let segments = wal.segments();
        segments.remove_through(3).unwrap();
        let left = read_all(&db, 3).unwrap();
        assert!(
            left.first().unwrap().seq <= 4,
            "a batch after the checkpoint went"
        );
        assert_eq!(left.last().unwrap().seq, 6);
        assert!(segments.bytes() > 0);
        // A torn tail ends the log.
        let last = log_files(&db).pop().unwrap();
        let mut file = OpenOptions::new().append(true).open(&last).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        assert_eq!(read_all(&db, 3).unwrap().last().unwrap().seq, 6);
        // A checkpoint through the last batch empties the open segment too; appends go on.
        segments.remove_through(6).unwrap();
        assert!(read_all(&db, 6).unwrap().is_empty());
        assert_eq!(record_bytes(&db).unwrap(), 0);
        assert_eq!(segments.bytes(), 0);
        wal.append(7, 7, ops(1).iter()).unwrap();
        assert_eq!(read_all(&db, 6).unwrap().len(), 1);
        drop(wal);
        let fresh = Wal::create(&db, 8, 300).unwrap();
        assert_eq!(fresh.len(), 0);
        assert_eq!(log_files(&db).len(), 1, "older segments stayed");
        remove_log_files(&db).unwrap();
        assert!(log_files(&db).is_empty());
    }

    #[test]
    fn checkpointed_segments_are_reused_and_their_old_records_never_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.roost");
        let mut wal = Wal::create(&db, 1, 300).unwrap();
        let segments = wal.segments();
        for seq in 1..=6 {
            wal.append(seq, seq, ops(2).iter()).unwrap();
        }
        let before = log_files(&db).len();
        segments.remove_through(4).unwrap();
        let spares = spare_files(&db);
        assert!(!spares.is_empty(), "no checkpointed segment was kept");
        assert_eq!(log_files(&db).len() + spares.len(), before);
        // The next rotations take the spares: same files, rewritten from the start.
        for seq in 7..=14 {
            wal.append(seq, seq, ops(1).iter()).unwrap();
        }
        assert!(spare_files(&db).len() < spares.len(), "no spare was reused");
        let seqs: Vec<u64> = read_all(&db, 4).unwrap().iter().map(|b| b.seq).collect();
        assert_eq!(seqs, (5..=14).collect::<Vec<_>>());
        assert_eq!(read_all(&db, 4).unwrap()[4].ops, ops(1));
        // A spare renamed into place before its first batch was written (a crash between the
        // two) holds only checkpointed batches: nothing after it is replayed, nothing before
        // it is lost.
        segments.remove_through(10).unwrap();
        let spare = spare_files(&db)
            .pop()
            .expect("no spare after a second checkpoint");
        std::fs::rename(&spare, segment_path(&db, 15)).unwrap();
        let seqs: Vec<u64> = read_all(&db, 10).unwrap().iter().map(|b| b.seq).collect();
        assert_eq!(seqs, (11..=14).collect::<Vec<_>>());
        remove_log_files(&db).unwrap();
        assert!(log_files(&db).is_empty() && spare_files(&db).is_empty());
    }

    #[test]
    fn replay_starts_right_after_the_checkpoint_or_not_at_all() {
        let bytes = log(&[(5, 1), (6, 1)]);
        assert_eq!(decode_all(&bytes, 4).0.len(), 2);
        assert_eq!(decode_all(&bytes, 5).0.len(), 1);
        // Batches 1–4 are not here: this log is not the main file's.
        assert!(decode_all(&bytes, 0).0.is_empty());
    }

    #[test]
    fn the_single_file_log_of_older_versions_is_read_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.roost");
        std::fs::write(legacy_path(&db), log(&[(1, 1), (2, 1)])).unwrap();
        std::fs::write(segment_path(&db, 3), log(&[(3, 1)])).unwrap();
        let seqs: Vec<u64> = read_all(&db, 0).unwrap().iter().map(|b| b.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}
