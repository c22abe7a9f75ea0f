//! The record envelope: how one stored value and its metadata are laid out on disk.
//!
//! Layout of format version 1 (all integers big-endian; byte offsets from the start):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0 | format version, `1` |
//! | 1 | flags: bit 0 expiry present, bit 1 content type present, bit 2 payload is zstd-compressed, bit 3 payload is encrypted (see [`crate::codec`]); bits 4–7 must be 0 |
//! | 2..10 | etag sequence (`u64`) |
//! | 10..18 | expiry, Unix milliseconds (`u64`), only if bit 0 |
//! | next 1 | content type length `n` (1–255), only if bit 1 |
//! | next `n` | content type (UTF-8), only if bit 1 |
//! | rest | the payload: the value verbatim (may be empty), or as the codec flags say |
//!
//! The decoder never trusts the bytes: every malformation is an [`Error::Corrupted`], never a
//! panic. A version it does not know is [`Error::UnsupportedFormat`].

use crate::error::Error;

pub(crate) const RECORD_VERSION: u8 = 1;
const FLAG_EXPIRY: u8 = 1 << 0;
const FLAG_CONTENT_TYPE: u8 = 1 << 1;
pub(crate) const FLAG_COMPRESSED: u8 = 1 << 2;
pub(crate) const FLAG_ENCRYPTED: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = FLAG_EXPIRY | FLAG_CONTENT_TYPE | FLAG_COMPRESSED | FLAG_ENCRYPTED;
/// The longest content type a record can carry.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// A decoded record, borrowing its value from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordView<'a> {
    pub etag: u64,
    pub expires_at_ms: Option<u64>,
    pub content_type: Option<&'a str>,
    /// The payload: the value itself unless a codec flag is set.
    pub value: &'a [u8],
    /// Codec flags (compressed / encrypted) of the payload.
    pub codec_flags: u8,
    /// The bytes before the payload (bound into the encryption's associated data).
    pub header: &'a [u8],
}

impl RecordView<'_> {
    /// Live means not expired at `now_ms`: a record expiring at `t` is gone from `t` on.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

pub(crate) fn encoded_len(content_type: Option<&str>, value_len: usize) -> usize {
    18 + content_type.map_or(0, |ct| 1 + ct.len()) + value_len
}

/// Encodes a record; `content_type` must be at most [`MAX_CONTENT_TYPE_BYTES`] (checked by the
/// caller when the request is validated) and is left out when empty.
#[cfg(test)]
pub(crate) fn encode(
    etag: u64,
    expires_at_ms: Option<u64>,
    content_type: Option<&str>,
    value: &[u8],
) -> Vec<u8> {
    let mut out = encode_header(etag, expires_at_ms, content_type, 0, value.len());
    out.extend_from_slice(value);
    out
}

/// The header of a record whose payload (of about `payload_len` bytes) follows.
pub(crate) fn encode_header(
    etag: u64,
    expires_at_ms: Option<u64>,
    content_type: Option<&str>,
    codec_flags: u8,
    payload_len: usize,
) -> Vec<u8> {
    let content_type = content_type.filter(|ct| !ct.is_empty());
    debug_assert!(content_type.is_none_or(|ct| ct.len() <= MAX_CONTENT_TYPE_BYTES));
    let mut out = Vec::with_capacity(encoded_len(content_type, payload_len));
    let mut flags = codec_flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED);
    if expires_at_ms.is_some() {
        flags |= FLAG_EXPIRY;
    }
    if content_type.is_some() {
        flags |= FLAG_CONTENT_TYPE;
    }
    out.push(RECORD_VERSION);
    out.push(flags);
    out.extend_from_slice(&etag.to_be_bytes());
    if let Some(at) = expires_at_ms {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(ct) = content_type {
        out.push(ct.len() as u8);
        out.extend_from_slice(ct.as_bytes());
    }
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<RecordView<'_>, Error> {
    let corrupt = |what: &str| Error::Corrupted(format!("record envelope: {what}"));
    let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    if version != RECORD_VERSION {
        return Err(Error::UnsupportedFormat {
            found: u32::from(version),
            supported: u32::from(RECORD_VERSION),
        });
    }
    let (&flags, rest) = rest.split_first().ok_or_else(|| corrupt("no flags"))?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(corrupt(&format!(
            "flags {flags:#04x} name features this version does not have"
        )));
    }
    let (etag, mut rest) = take_u64(rest).ok_or_else(|| corrupt("truncated etag"))?;
    let mut expires_at_ms = None;
    if flags & FLAG_EXPIRY != 0 {
        let (at, after) = take_u64(rest).ok_or_else(|| corrupt("truncated expiry"))?;
        expires_at_ms = Some(at);
        rest = after;
    }
    let mut content_type = None;
    if flags & FLAG_CONTENT_TYPE != 0 {
        let (&len, after) = rest
            .split_first()
            .ok_or_else(|| corrupt("truncated content type"))?;
        let len = usize::from(len);
        if len == 0 || after.len() < len {
            return Err(corrupt("bad content type length"));
        }
        let text =
            std::str::from_utf8(&after[..len]).map_err(|_| corrupt("content type is not UTF-8"))?;
        content_type = Some(text);
        rest = &after[len..];
    }
    let header_len = bytes.len() - rest.len();
    Ok(RecordView {
        etag,
        expires_at_ms,
        content_type,
        value: rest,
        codec_flags: flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED),
        header: &bytes[..header_len],
    })
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode(0x0102, Some(0x0304), Some("a/b"), b"xyz");
        assert_eq!(
            bytes,
            [
                &[1u8, 0b11][..],
                &0x0102u64.to_be_bytes(),
                &0x0304u64.to_be_bytes(),
                &[3, b'a', b'/', b'b', b'x', b'y', b'z'],
            ]
            .concat()
        );
        let minimal = encode(7, None, None, b"");
        assert_eq!(minimal, [&[1u8, 0][..], &7u64.to_be_bytes()].concat());
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(matches!(decode(&[]), Err(Error::Corrupted(_))));
        assert!(matches!(
            decode(&[2, 0]),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
        assert!(matches!(decode(&[1, 0, 0, 0]), Err(Error::Corrupted(_))));
        assert!(matches!(
            decode(&[&[1u8, 0b1_0000][..], &[0; 8]].concat()),
            Err(Error::Corrupted(_))
        ));
        assert!(matches!(
            decode(&[&[1u8, 0b10][..], &[0; 8], &[5, b'a']].concat()),
            Err(Error::Corrupted(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(etag: u64, expiry: Option<u64>, ct in proptest::option::of("[a-z/+.-]{1,40}"),
                      value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = encode(etag, expiry, ct.as_deref(), &value);
            prop_assert_eq!(bytes.len(), encoded_len(ct.as_deref(), value.len()) - if expiry.is_none() { 8 } else { 0 });
            let view = decode(&bytes).unwrap();
            prop_assert_eq!(view.etag, etag);
            prop_assert_eq!(view.expires_at_ms, expiry);
            prop_assert_eq!(view.content_type, ct.as_deref());
            prop_assert_eq!(view.value, &value[..]);
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_canonical_record_or_an_error(
            flags in 0u8..32,
            tail in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let bytes = [&[RECORD_VERSION, flags][..], &tail].concat();
            match decode(&bytes) {
                Ok(view) => {
                    let mut again = encode_header(view.etag, view.expires_at_ms, view.content_type, view.codec_flags, 0);
                    again.extend_from_slice(view.value);
                    prop_assert_eq!(again, bytes)
                }
                Err(err) => prop_assert!(matches!(err, Error::Corrupted(_)), "{err}"),
            }
        }
    }
}
