//! The write-ahead log in front of redb, for `Durability::Immediate` on a file.
//!
//! Why: a durable redb commit rewrites the B-tree pages on the path to every changed key and
//! fsyncs the file; appending a batch's final records to a log and fsyncing that is one
//! sequential write. So each batch is (1) appended here and fdatasync'ed, (2) committed to
//! redb *without* fsync (readers see it from then on), (3) acknowledged. A checkpoint — one
//! durable redb commit — later makes everything before it durable in the main file, after
//! which the log is emptied. On open, records newer than the checkpointed sequence are
//! re-applied. `docs/design.md` §"Write-ahead log" argues the crash cases.
//!
//! File `<database>-wal`, a sequence of records:
//!
//! ```text
//! len u32 LE (bytes after the crc) ‖ crc32 u32 LE (of those bytes) ‖
//! seq u64 LE ‖ last_etag u64 LE ‖ op count u32 LE ‖ ops…
//! op: key len u32 LE ‖ key ‖ record len u32 LE (u32::MAX = delete) ‖ sealed record
//! ```
//!
//! Records carry the *sealed* envelope (compressed and encrypted exactly as stored), never
//! plaintext. Reading stops at the first record that is short, fails its checksum, or does
//! not carry the next sequence number: that is the torn tail of a write that was never
//! acknowledged, or leftovers from before the log was last emptied.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// The log file of the database at `db_path`.
pub(crate) fn path_for(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

pub(crate) struct Wal {
    file: File,
    /// Bytes of valid records in the file (the append position).
    len: u64,
    buffer: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the log and returns the batches after `checkpointed_seq`, in order.
    pub fn open(path: &Path, checkpointed_seq: u64) -> std::io::Result<(Wal, Vec<WalBatch>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (batches, valid) = decode_all(&bytes, checkpointed_seq);
        // Drop the torn tail now, so appends continue right after the last good record.
        if valid as u64 != bytes.len() as u64 {
            file.set_len(valid as u64)?;
        }
        file.seek(SeekFrom::Start(valid as u64))?;
        Ok((
            Wal {
                file,
                len: valid as u64,
                buffer: Vec::new(),
            },
            batches,
        ))
    }

    /// Appends one batch and waits until it is on disk.
    pub fn append(&mut self, batch_seq: u64, last_etag: u64, ops: &[WalOp]) -> std::io::Result<()> {
        self.buffer.clear();
        encode(&mut self.buffer, batch_seq, last_etag, ops);
        self.file.write_all(&self.buffer)?;
        self.file.sync_data()?;
        self.len += self.buffer.len() as u64;
        Ok(())
    }

    /// Bytes in the log since it was last emptied.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Empties the log (after a checkpoint made its contents durable in the main file).
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn encode(out: &mut Vec<u8>, seq: u64, last_etag: u64, ops: &[WalOp]) {
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
fn decode_all(bytes: &[u8], checkpointed_seq: u64) -> (Vec<WalBatch>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    let mut expected: Option<u64> = None;
    while let Some((batch, used)) = decode_one(&bytes[at..]) {
        // Sequence numbers are contiguous; a record that breaks the run is from an older
        // generation of the file.
        if expected.is_some_and(|next| batch.seq != next) {
            break;
        }
        expected = Some(batch.seq + 1);
        at += used;
        if batch.seq > checkpointed_seq {
            batches.push(batch);
        }
    }
    (batches, at)
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
            encode(&mut out, *seq, seq * 10, &ops(*n));
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
        let (batches, valid) = decode_all(&bytes, 0);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(valid, log(&[(3, 1), (4, 1)]).len());
    }

    #[test]
    fn the_file_reopens_where_the_valid_records_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("db.roost"));
        assert!(path.to_string_lossy().ends_with("db.roost-wal"));
        {
            let (mut wal, replay) = Wal::open(&path, 0).unwrap();
            assert!(replay.is_empty());
            wal.append(1, 1, &ops(2)).unwrap();
            wal.append(2, 2, &ops(1)).unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        drop(file);
        let (mut wal, replay) = Wal::open(&path, 1).unwrap();
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].seq, 2);
        wal.append(3, 3, &ops(1)).unwrap();
        drop(wal);
        let (mut wal, replay) = Wal::open(&path, 0).unwrap();
        assert_eq!(replay.iter().map(|b| b.seq).collect::<Vec<_>>(), [1, 2, 3]);
        wal.reset().unwrap();
        assert_eq!(wal.len(), 0);
        drop(wal);
        assert!(Wal::open(&path, 0).unwrap().1.is_empty());
    }
}
