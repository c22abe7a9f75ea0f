//! Values at rest: zstd compression and XChaCha20-Poly1305 encryption.
//!
//! A value is compressed, then encrypted (each optional):
//! - compressed only when compression is on, the value is at least `min_size` bytes, and the
//!   zstd frame is smaller than the value (flag bit 2 of the envelope);
//! - encrypted when an encryption key is configured (flag bit 3). The payload is then
//!   `key id (u32 BE) ‖ nonce (24 random bytes) ‖ ciphertext ‖ tag (16 bytes)`, and the
//!   associated data is `"roost-record-v1" ‖ keyspace id (16 bytes) ‖ key length (u32 BE) ‖
//!   key ‖ envelope header` — so a ciphertext copied to another key, another keyspace, or
//!   under an altered etag, expiry or content type fails authentication.
//!
//! The envelope header (etag, expiry, content type) stays in clear, so etag checks, expiry and
//! sweeping never decrypt. Keys are identified by a 4-byte key check value (the first bytes of
//! the key's encryption of zeros under a zero nonce); a key-check record in `roost_meta`
//! proves at open that the configured key is the keyspace's key, so a wrong or missing key
//! fails at open instead of returning garbage. Rotation: configure the new key as primary and
//! the old one as previous; records name their key id, new writes use the primary, and
//! [`crate::Database::rewrite_all`] re-encodes every record under the current settings.

use std::borrow::Cow;
use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::ReadableTable;

use crate::error::{Error, display_key};
use crate::record::{self, FLAG_COMPRESSED, FLAG_ENCRYPTED, RecordView};

const RECORD_AAD: &[u8] = b"roost-record-v1";
const KEY_CHECK_AAD: &[u8] = b"roost-key-check-v1";
const KEY_CHECK_PLAINTEXT: &[u8] = b"roost key check";
const NONCE_LEN: usize = 24;

/// A 256-bit encryption key. Its `Debug` shows only the key id; the bytes are wiped on drop.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; 32],
    id: u32,
}

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> EncryptionKey {
        let cipher = XChaCha20Poly1305::new((&bytes).into());
        let check = cipher
            .encrypt(XNonce::from_slice(&[0; NONCE_LEN]), &[0u8; 16][..])
            .expect("encrypting 16 bytes cannot fail");
        let id = u32::from_be_bytes([check[0], check[1], check[2], check[3]]);
        EncryptionKey { bytes, id }
    }

    /// Parses 64 hexadecimal characters. The error never echoes the input.
    pub fn from_hex(text: &str) -> Result<EncryptionKey, Error> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(Error::EncryptionKey(format!(
                "an encryption key is 64 hexadecimal characters (256 bits); got {} characters",
                text.len()
            )));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| {
                Error::EncryptionKey("an encryption key must be hexadecimal (0-9, a-f)".into())
            })?;
        }
        Ok(EncryptionKey::from_bytes(bytes))
    }

    /// The key's id, stored in each record it encrypts.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptionKey {{ id: {:08x}, bytes: <redacted> }}",
            self.id
        )
    }
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        for byte in self.bytes.iter_mut() {
            // Volatile so the wipe is not optimised away.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// zstd settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// zstd level (1–22; 3 is zstd's default).
    pub level: i32,
    /// Values shorter than this are never compressed.
    pub min_size: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: 3,
            min_size: 256,
        }
    }
}

/// How values are stored: compression and encryption settings.
#[derive(Debug, Clone, Default)]
pub struct CodecOptions {
    pub compression: Option<Compression>,
    pub encryption_key: Option<EncryptionKey>,
    pub previous_encryption_key: Option<EncryptionKey>,
}

/// The codec of an open keyspace.
#[derive(Debug)]
pub(crate) struct Codec {
    compression: Option<Compression>,
    primary: Option<EncryptionKey>,
    previous: Option<EncryptionKey>,
    keyspace_id: [u8; 16],
    /// Largest plaintext a compressed payload may expand to.
    max_value: usize,
}

fn aad(keyspace_id: &[u8; 16], key: &[u8], header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_AAD.len() + 16 + 4 + key.len() + header.len());
    out.extend_from_slice(RECORD_AAD);
    out.extend_from_slice(keyspace_id);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(header);
    out
}

thread_local! {
    /// zstd contexts are costly to create (the compressor's is about a megabyte at level 3):
    /// each thread keeps one of each and reuses it.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(value: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = slot.as_mut().expect("just set");
        compressor.compress(value)
    })
}

/// Decompresses a frame of at most `max` bytes of content. The frame's declared content size
/// (Roost always writes it) sizes the buffer; a frame declaring more than `max` is refused.
fn decompress(frame: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or_else(|| std::io::Error::other("zstd frame without a content size"))?;
    if declared > max as u64 {
        return Err(std::io::Error::other(
            "zstd frame larger than the value limit",
        ));
    }
    let capacity = declared as usize;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut().expect("just set").decompress(frame, capacity)
    })
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

impl Codec {
    /// Encodes a whole record: header, then the value compressed and/or encrypted.
    pub fn seal(
        &self,
        key: &[u8],
        etag: u64,
        expires_at_ms: Option<u64>,
        content_type: Option<&str>,
        value: &[u8],
    ) -> Vec<u8> {
        let mut flags = 0;
        let mut payload: Cow<'_, [u8]> = Cow::Borrowed(value);
        if let Some(c) = self.compression
            && value.len() >= c.min_size
            && let Ok(compressed) = compress(value, c.level)
            && compressed.len() < value.len()
        {
            payload = Cow::Owned(compressed);
            flags |= FLAG_COMPRESSED;
        }
        let Some(primary) = &self.primary else {
            let mut out =
                record::encode_header(etag, expires_at_ms, content_type, flags, payload.len());
            out.extend_from_slice(&payload);
            return out;
        };
        flags |= FLAG_ENCRYPTED;
        let mut out = record::encode_header(
            etag,
            expires_at_ms,
            content_type,
            flags,
            payload.len() + 4 + NONCE_LEN + 16,
        );
        let nonce = random_nonce();
        let associated = aad(&self.keyspace_id, key, &out);
        let ciphertext = primary
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &payload,
                    aad: &associated,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a bounded value cannot fail");
        out.extend_from_slice(&primary.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The plaintext value of a decoded record.
    pub fn open<'a>(&self, key: &[u8], view: &RecordView<'a>) -> Result<Cow<'a, [u8]>, Error> {
        let mut payload: Cow<'a, [u8]> = Cow::Borrowed(view.value);
        if view.codec_flags & FLAG_ENCRYPTED != 0 {
            let integrity = || Error::Integrity {
                key: display_key(key),
            };
            if view.value.len() < 4 + NONCE_LEN + 16 {
                return Err(integrity());
            }
            let (id, rest) = view.value.split_at(4);
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
            let cipher_key = [&self.primary, &self.previous]
                .into_iter()
                .flatten()
                .find(|k| k.id == id)
                .ok_or_else(|| {
                    Error::EncryptionKey(format!(
                        "record {:?} is encrypted with key id {id:08x}, which is not configured; \
                         configure it as the previous key (previousEncryptionKey) until the keyspace is rewritten",
                        display_key(key)
                    ))
                })?;
            let plaintext = cipher_key
                .cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad(&self.keyspace_id, key, view.header),
                    },
                )
                .map_err(|_| integrity())?;
            payload = Cow::Owned(plaintext);
        }
        if view.codec_flags & FLAG_COMPRESSED != 0 {
            let plain =
                decompress(&payload, self.max_value.max(1)).map_err(|_| Error::Integrity {
                    key: display_key(key),
                })?;
            payload = Cow::Owned(plain);
        }
        Ok(payload)
    }

    /// Whether a record should be re-encoded to match the current settings.
    pub fn needs_rewrite(&self, view: &RecordView<'_>) -> bool {
        let encrypted = view.codec_flags & FLAG_ENCRYPTED != 0;
        match (&self.primary, encrypted) {
            (Some(primary), true) => view.value.get(..4) != Some(&primary.id.to_be_bytes()[..]),
            (Some(_), false) => true,
            (None, true) => true,
            (None, false) => {
                self.compression.is_some() && view.codec_flags & FLAG_COMPRESSED == 0
                    || self.compression.is_none() && view.codec_flags & FLAG_COMPRESSED != 0
            }
        }
    }
}

/// Sets up the codec of a keyspace at open: creates its keyspace id, and checks (or writes)
/// the key-check record so a wrong or missing key fails here.
pub(crate) fn prepare(
    db: &redb::Database,
    options: &CodecOptions,
    max_value: usize,
) -> Result<Codec, Error> {
    let txn = db.begin_write()?;
    let codec;
    let mut changed = false;
    {
        let mut meta = txn.open_table(crate::tables::META)?;
        let stored_id = meta
            .get(crate::meta::KEYSPACE_ID)?
            .map(|g| g.value().to_vec());
        let keyspace_id = match stored_id {
            Some(id) => <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| Error::Corrupted("keyspace id in roost_meta".into()))?,
            None => {
                let mut id = [0u8; 16];
                OsRng.fill_bytes(&mut id);
                meta.insert(crate::meta::KEYSPACE_ID, id.as_slice())?;
                changed = true;
                id
            }
        };
        let check_aad = [KEY_CHECK_AAD, &keyspace_id].concat();
        let verify = |key: &EncryptionKey, stored: &[u8]| -> bool {
            stored.len() > 4 + NONCE_LEN
                && stored[..4] == key.id.to_be_bytes()
                && key
                    .cipher()
                    .decrypt(
                        XNonce::from_slice(&stored[4..4 + NONCE_LEN]),
                        Payload {
                            msg: &stored[4 + NONCE_LEN..],
                            aad: &check_aad,
                        },
                    )
                    .is_ok_and(|p| p == KEY_CHECK_PLAINTEXT)
        };
        let stored = meta
            .get(crate::meta::KEY_CHECK)?
            .map(|g| g.value().to_vec());
        let primary = options.encryption_key.as_ref();
        let previous = options.previous_encryption_key.as_ref();
        match (&stored, primary) {
            (Some(_), None) => {
                return Err(Error::EncryptionKey(
                    "this keyspace is encrypted: configure its key (encryptionKey)".into(),
                ));
            }
            (Some(stored), Some(primary)) => {
                let by_primary = verify(primary, stored);
                let by_previous = previous.is_some_and(|p| verify(p, stored));
                if !by_primary && !by_previous {
                    return Err(Error::EncryptionKey(
                        "the configured encryption key is not this keyspace's key (nor is the previous key, if set)".into(),
                    ));
                }
            }
            (None, _) => {}
        }
        let checked_by_primary = stored
            .as_ref()
            .is_some_and(|s| primary.is_some_and(|p| verify(p, s)));
        if let Some(primary) = primary.filter(|_| !checked_by_primary) {
            // (Re)write the key check under the primary key (first use, or after rotation).
            changed = true;
            let nonce = random_nonce();
            let sealed = primary
                .cipher()
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: KEY_CHECK_PLAINTEXT,
                        aad: &check_aad,
                    },
                )
                .expect("encrypting the key check cannot fail");
            let record = [&primary.id.to_be_bytes()[..], &nonce, &sealed].concat();
            meta.insert(crate::meta::KEY_CHECK, record.as_slice())?;
        }
        codec = Codec {
            compression: options.compression,
            primary: options.encryption_key.clone(),
            previous: options.previous_encryption_key.clone(),
            keyspace_id,
            max_value,
        };
    }
    if changed {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(compression: bool, key: Option<[u8; 32]>) -> Codec {
        Codec {
            compression: compression.then(Compression::default),
            primary: key.map(EncryptionKey::from_bytes),
            previous: None,
            keyspace_id: [7; 16],
            max_value: 1 << 20,
        }
    }

    #[test]
    fn round_trips_in_every_mode() {
        let value = br#"{"message":"hello hello hello hello hello hello hello hello"}"#.repeat(10);
        for (compress, key) in [
            (false, None),
            (true, None),
            (false, Some([1; 32])),
            (true, Some([2; 32])),
        ] {
            let codec = codec(compress, key);
            let sealed = codec.seal(b"k", 5, Some(9), Some("application/json"), &value);
            let view = record::decode(&sealed).unwrap();
            assert_eq!(view.etag, 5);
            assert_eq!(codec.open(b"k", &view).unwrap().as_ref(), value.as_slice());
            if compress {
                assert!(sealed.len() < value.len());
            }
        }
    }

    #[test]
    fn ciphertexts_are_bound_to_key_keyspace_and_header() {
        let codec = codec(false, Some([3; 32]));
        let sealed = codec.seal(b"k", 5, None, None, b"secret");
        let view = record::decode(&sealed).unwrap();
        assert!(matches!(
            codec.open(b"other", &view),
            Err(Error::Integrity { .. })
        ));
        let mut other_keyspace = self::codec(false, Some([3; 32]));
        other_keyspace.keyspace_id = [8; 16];
        assert!(matches!(
            other_keyspace.open(b"k", &view),
            Err(Error::Integrity { .. })
        ));
        let mut altered = sealed.clone();
        altered[9] ^= 1; // the etag's last byte
        let altered_view = record::decode(&altered).unwrap();
        assert!(matches!(
            codec.open(b"k", &altered_view),
            Err(Error::Integrity { .. })
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            codec.open(b"k", &record::decode(&flipped).unwrap()),
            Err(Error::Integrity { .. })
        ));
        let wrong = self::codec(false, Some([4; 32]));
        assert!(matches!(
            wrong.open(b"k", &view),
            Err(Error::EncryptionKey(_))
        ));
    }

    #[test]
    fn keys_parse_from_hex_and_never_show_their_bytes() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = EncryptionKey::from_hex(hex).unwrap();
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("00112233") && shown.contains("redacted"),
            "{shown}"
        );
        for bad in ["", "00", &"zz".repeat(32), &"0".repeat(63)] {
            let err = EncryptionKey::from_hex(bad).unwrap_err().to_string();
            assert!(
                !bad.is_empty() && !err.contains(bad) || bad.is_empty(),
                "{err}"
            );
        }
    }
}
