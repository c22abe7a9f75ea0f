//! HPACK (RFC 7541): the header compression of HTTP/2, both directions.
//!
//! [`Decoder`] reads a client's header blocks: indexed fields, literals with and without
//! indexing, the dynamic table with its size updates (only at the start of a block, never
//! above the size this server advertises), and Huffman-coded strings. Any violation is an
//! [`HpackError`], which the connection answers with COMPRESSION_ERROR.
//!
//! [`Encoder`] writes the server's header blocks. Fields it is told to cache (the constant
//! `content-type: application/grpc` and `grpc-status: 0`) go into the client's dynamic table
//! once and are one byte each after that; everything else is a literal without indexing,
//! with a static-table name where there is one. Strings are sent raw, not Huffman-coded.

use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a field.
    Truncated,
    /// An integer longer than any this server accepts.
    IntegerOverflow,
    /// Index 0, or past the end of the static and dynamic tables.
    BadIndex,
    /// A Huffman string with the EOS symbol, bad padding, or a code that is not in the table.
    BadHuffman,
    /// A dynamic table size update above the advertised limit, or after the first field.
    BadSizeUpdate,
    /// A string longer than the header list the server accepts.
    TooLong,
}

/// The static table (RFC 7541, Appendix A); index 1 is the first entry.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in a dynamic table beyond its name and value (RFC 7541, 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The largest integer a block may carry: far above any table size or string this server
/// accepts, far below overflow.
const MAX_INTEGER: usize = 1 << 24;

/// One decoded header field; names and values share the block's or the table's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Bytes,
    pub value: Bytes,
}

/// A dynamic table: newest entry first, as HPACK indexes it.
#[derive(Debug, Default)]
struct Table {
    entries: VecDeque<Field>,
    size: usize,
    max: usize,
}

impl Table {
    fn new(max: usize) -> Table {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max,
        }
    }

    fn insert(&mut self, field: Field) {
        let size = field.name.len() + field.value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // An entry larger than the table empties it and is not kept (RFC 7541, 4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.entries.push_front(field);
        self.evict();
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let old = self
                .entries
                .pop_back()
                .expect("a table over its size has entries");
            self.size -= old.name.len() + old.value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// Reads header blocks, keeping the client's dynamic table across them.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The table size this server advertised (SETTINGS_HEADER_TABLE_SIZE): no size update
    /// may go above it.
    limit: usize,
    /// The longest string accepted (the advertised header list size).
    max_string: usize,
    /// The last few short Huffman strings decoded, as sent and decoded: a client that sends
    /// a field without indexing sends the same bytes every time (the `h2` crate's `:path`),
    /// and a match is a comparison instead of a decoding.
    recent: [(Vec<u8>, Bytes); RECENT],
    /// The entry of `recent` to replace next.
    next_recent: usize,
}

/// How many decoded Huffman strings are remembered...
const RECENT: usize = 4;
/// ...of at most this many bytes as sent.
const RECENT_MAX: usize = 64;

impl Decoder {
    /// A decoder for a connection that advertised a table of `limit` bytes and accepts
    /// strings of up to `max_string` bytes.
    pub fn new(limit: usize, max_string: usize) -> Decoder {
        Decoder {
            table: Table::new(limit),
            limit,
            max_string,
            recent: Default::default(),
            next_recent: 0,
        }
    }

    /// Decodes one complete header block, calling `field` for each field in order.
    pub fn decode(
        &mut self,
        block: &Bytes,
        mut field: impl FnMut(Field),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut first = true;
        while at < block.len() {
            let byte = block[at];
            if byte & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                field(self.lookup(index)?);
            } else if byte & 0xC0 == 0x40 {
                let field_ = self.literal(block, &mut at, 6)?;
                self.table.insert(field_.clone());
                field(field_);
            } else if byte & 0xE0 == 0x20 {
                let size = integer(block, &mut at, 5)?;
                if !first || size > self.limit {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.table.resize(size);
                // Several updates may open a block (RFC 7541, 4.2): `first` stays.
                continue;
            } else {
                // Without indexing (0000) and never indexed (0001): both 4-bit prefixes.
                field(self.literal(block, &mut at, 4)?);
            }
            first = false;
        }
        Ok(())
    }

    fn lookup(&self, index: usize) -> Result<Field, HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (name, value) = STATIC[index - 1];
                Ok(Field {
                    name: Bytes::from_static(name.as_bytes()),
                    value: Bytes::from_static(value.as_bytes()),
                })
            }
            _ => self
                .table
                .entries
                .get(index - 62)
                .cloned()
                .ok_or(HpackError::BadIndex),
        }
    }

    fn literal(&mut self, block: &Bytes, at: &mut usize, prefix: u8) -> Result<Field, HpackError> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            self.string(block, at)?
        } else {
            self.lookup(index)?.name
        };
        let value = self.string(block, at)?;
        Ok(Field { name, value })
    }

    fn string(&mut self, block: &Bytes, at: &mut usize) -> Result<Bytes, HpackError> {
        let huffman = *block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = integer(block, at, 7)?;
        if len > self.max_string {
            return Err(HpackError::TooLong);
        }
        let end = at.checked_add(len).ok_or(HpackError::Truncated)?;
        if end > block.len() {
            return Err(HpackError::Truncated);
        }
        let raw = block.slice(*at..end);
        *at = end;
        if huffman {
            if raw.len() > RECENT_MAX {
                return huffman_decode(&raw).map(Bytes::from);
            }
            if let Some((_, decoded)) = self.recent.iter().find(|(sent, _)| sent[..] == raw[..]) {
                return Ok(decoded.clone());
            }
            let decoded = Bytes::from(huffman_decode(&raw)?);
            let slot = &mut self.recent[self.next_recent];
            slot.0.clear();
            slot.0.extend_from_slice(&raw);
            slot.1 = decoded.clone();
            self.next_recent = (self.next_recent + 1) % RECENT;
            Ok(decoded)
        } else {
            Ok(raw)
        }
    }
}

/// An integer with an `prefix`-bit prefix (RFC 7541, 5.1), starting at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << prefix) as usize - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or(HpackError::Truncated)? as usize;
        *at += 1;
        value += (byte & 0x7F) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Writes `value` with a `prefix`-bit prefix; `flags` fills the first byte's other bits.
fn put_integer(out: &mut BytesMut, value: usize, prefix: u8, flags: u8) {
    let mask = (1u16 << prefix) as usize - 1;
    if value < mask {
        out.put_u8(flags | value as u8);
        return;
    }
    out.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.put_u8((rest & 0x7F) as u8 | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// The length in bits of each symbol's Huffman code, symbols 0–255 and EOS (256)
/// (RFC 7541, Appendix B). The code is canonical: the codes follow from the lengths.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;

/// The Huffman code as a machine that reads four bits at a time. Its states are the inner
/// nodes of the code's tree (the root is 0); each (state, nibble) entry says where the nibble
/// leads and which symbol it completes, if one (codes are at least 5 bits, so a nibble ends at
/// most one).
struct Huffman {
    /// Per symbol: its code (for the encoder).
    codes: [u32; 257],
    /// `(state << 4) | nibble` → next state, and the symbol completed (`NONE`, or `FAIL`
    /// for EOS).
    steps: Vec<(u8, u16)>,
    /// Per state: whether input may end there (the bits since the last symbol are at most
    /// seven ones: padding).
    accepting: [bool; 256],
}

const NONE: u16 = 0x100 + 1;
const FAIL: u16 = 0x100 + 2;

fn huffman() -> &'static Huffman {
    static TABLE: OnceLock<Huffman> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The canonical codes: symbols ordered by length, then value, count up.
        let mut symbols: [u16; 257] = std::array::from_fn(|s| s as u16);
        symbols.sort_by_key(|&s| (HUFFMAN_LENGTHS[s as usize], s));
        let mut codes = [0u32; 257];
        let mut code: u32 = 0;
        let mut length = HUFFMAN_LENGTHS[symbols[0] as usize];
        for (i, &symbol) in symbols.iter().enumerate() {
            let len = HUFFMAN_LENGTHS[symbol as usize];
            if i > 0 {
                code = (code + 1) << (len - length);
            }
            length = len;
            codes[symbol as usize] = code;
        }
        // The tree: inner nodes hold two children, each an inner node or a leaf (symbol).
        #[derive(Clone, Copy)]
        enum Child {
            Empty,
            Node(usize),
            Leaf(u16),
        }
        let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
        let mut depth_ones: Vec<(u8, bool)> = vec![(0, true)];
        for symbol in 0..257u16 {
            let len = u32::from(HUFFMAN_LENGTHS[symbol as usize]);
            let code = codes[symbol as usize];
            let mut node = 0;
            for bit in (0..len).rev() {
                let b = ((code >> bit) & 1) as usize;
                if bit == 0 {
                    nodes[node][b] = Child::Leaf(symbol);
                } else {
                    node = match nodes[node][b] {
                        Child::Node(next) => next,
                        _ => {
                            let (depth, ones) = depth_ones[node];
                            nodes.push([Child::Empty; 2]);
                            depth_ones.push((depth + 1, ones && b == 1));
                            let next = nodes.len() - 1;
                            nodes[node][b] = Child::Node(next);
                            next
                        }
                    };
                }
            }
        }
        assert_eq!(
            nodes.len(),
            256,
            "a complete code over 257 symbols has 256 inner nodes"
        );
        let mut steps = vec![(0u8, NONE); 256 * 16];
        for state in 0..256 {
            for nibble in 0..16u8 {
                let mut node = state;
                let mut emitted = NONE;
                for bit in (0..4).rev() {
                    match nodes[node][usize::from((nibble >> bit) & 1)] {
                        Child::Node(next) => node = next,
                        Child::Leaf(symbol) => {
                            emitted = if symbol == EOS { FAIL } else { symbol };
                            node = 0;
                        }
                        Child::Empty => unreachable!("the code is complete"),
                    }
                }
                steps[(state << 4) | usize::from(nibble)] = (node as u8, emitted);
            }
        }
        let accepting = std::array::from_fn(|state| {
            let (depth, ones) = depth_ones[state];
            state == 0 || (ones && depth <= 7)
        });
        Huffman {
            codes,
            steps,
            accepting,
        }
    })
}

/// Decodes a Huffman-coded string (RFC 7541, 5.2): EOS in the input, or padding that is not
/// up to seven one bits, is an error.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, HpackError> {
    let table = huffman();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut state = 0u8;
    for &byte in input {
        for nibble in [byte >> 4, byte & 0x0F] {
            let (next, emitted) = table.steps[(usize::from(state) << 4) | usize::from(nibble)];
            if emitted < 0x100 {
                out.push(emitted as u8);
            } else if emitted == FAIL {
                return Err(HpackError::BadHuffman);
            }
            state = next;
        }
    }
    if !table.accepting[usize::from(state)] {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

/// Huffman-codes `input` (for tests and clients; the server sends strings raw).
pub fn huffman_encode(input: &[u8], out: &mut Vec<u8>) {
    let table = huffman();
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &byte in input {
        let len = u32::from(HUFFMAN_LENGTHS[byte as usize]);
        acc = (acc << len) | u64::from(table.codes[byte as usize]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xFF >> bits));
    }
}

/// Writes the server's header blocks, with a model of the client's dynamic table.
#[derive(Debug)]
pub struct Encoder {
    table: Table,
    /// A size update the next block must open with (the client changed its table size).
    pending_resize: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            table: Table::new(4096),
            pending_resize: None,
        }
    }
}

impl Encoder {
    /// The client's SETTINGS_HEADER_TABLE_SIZE changed: the next block announces the new size
    /// (this encoder never uses more than 4096 bytes of it).
    pub fn set_max_size(&mut self, size: usize) {
        let size = size.min(4096);
        if size != self.table.max || self.pending_resize.is_some() {
            self.table.resize(size);
            self.pending_resize = Some(size);
        }
    }

    /// Opens a header block: the size update owed, if any.
    pub fn begin(&mut self, out: &mut BytesMut) {
        if let Some(size) = self.pending_resize.take() {
            put_integer(out, size, 5, 0x20);
        }
    }

    /// A field that is sent again and again: indexed once in the client's table.
    pub fn cached(&mut self, out: &mut BytesMut, name: &'static str, value: &'static str) {
        if let Some(position) = self
            .table
            .entries
            .iter()
            .position(|f| f.name == name.as_bytes() && f.value == value.as_bytes())
        {
            put_integer(out, 62 + position, 7, 0x80);
            return;
        }
        if let Some(index) = STATIC.iter().position(|&(n, v)| n == name && v == value) {
            put_integer(out, index + 1, 7, 0x80);
            return;
        }
        let field = Field {
            name: Bytes::from_static(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
        };
        if name.len() + value.len() + ENTRY_OVERHEAD <= self.table.max {
            self.name(out, name.as_bytes(), 6, 0x40);
            string(out, value.as_bytes());
            self.table.insert(field);
        } else {
            self.name(out, name.as_bytes(), 4, 0x00);
            string(out, value.as_bytes());
        }
    }

    /// A field sent as a literal without indexing.
    pub fn literal(&mut self, out: &mut BytesMut, name: &[u8], value: &[u8]) {
        self.name(out, name, 4, 0x00);
        string(out, value);
    }

    fn name(&self, out: &mut BytesMut, name: &[u8], prefix: u8, flags: u8) {
        match STATIC.iter().position(|&(n, _)| n.as_bytes() == name) {
            Some(index) => put_integer(out, index + 1, prefix, flags),
            None => {
                out.put_u8(flags);
                string(out, name);
            }
        }
    }
}

fn string(out: &mut BytesMut, value: &[u8]) {
    put_integer(out, value.len(), 7, 0x00);
    out.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(
        decoder: &mut Decoder,
        block: &[u8],
    ) -> Result<Vec<(String, String)>, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(&Bytes::copy_from_slice(block), |f| {
            fields.push((
                String::from_utf8_lossy(&f.name).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            ))
        })?;
        Ok(fields)
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc_7541_c4_requests_decode_with_huffman_and_the_dynamic_table() {
        let mut decoder = Decoder::new(4096, 65536);
        let first = decode_all(
            &mut decoder,
            &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        )
        .unwrap();
        assert_eq!(
            first,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        // The second request refers to the authority the first one indexed (62).
        let second = decode_all(&mut decoder, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
    }

    #[test]
    fn bad_indexes_size_updates_and_truncations_are_errors() {
        let mut decoder = Decoder::new(4096, 65536);
        assert_eq!(decode_all(&mut decoder, &[0x80]), Err(HpackError::BadIndex));
        assert_eq!(decode_all(&mut decoder, &[0xBE]), Err(HpackError::BadIndex));
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xFF]),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(HpackError::IntegerOverflow)
        );
        // A size update above the advertised 4096, and one after a field.
        assert_eq!(
            decode_all(&mut decoder, &[0x3F, 0xE2, 0x1F]),
            Err(HpackError::BadSizeUpdate)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x82, 0x20]),
            Err(HpackError::BadSizeUpdate)
        );
        // Two updates opening a block are allowed; shrinking to 0 empties the table.
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x01, b'a', 0x01, b'b'])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(decode_all(&mut decoder, &[0xBE]).unwrap()[0].0, "a");
        assert_eq!(
            decode_all(&mut decoder, &[0x20, 0x3F, 0xE1, 0x1F, 0x82])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(decode_all(&mut decoder, &[0xBE]), Err(HpackError::BadIndex));
        // A string above the accepted length.
        let mut small = Decoder::new(4096, 3);
        assert_eq!(
            decode_all(&mut small, &[0x00, 0x04, b'a', b'b', b'c', b'd', 0x00]),
            Err(HpackError::TooLong)
        );
    }

    #[test]
    fn huffman_padding_and_eos_are_checked() {
        // "0" is 00000 (5 bits): padded with three ones it is 0x07.
        assert_eq!(huffman_decode(&[0x07]).unwrap(), b"0");
        // Padding of zeros, and padding of eight or more bits, are errors.
        assert_eq!(huffman_decode(&[0x00]), Err(HpackError::BadHuffman));
        assert_eq!(huffman_decode(&[0x07, 0xFF]), Err(HpackError::BadHuffman));
        // EOS itself (30 ones) is an error.
        assert_eq!(
            huffman_decode(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(HpackError::BadHuffman)
        );
        let mut out = Vec::new();
        huffman_encode(b"www.example.com", &mut out);
        assert_eq!(out, hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    #[test]
    fn the_encoder_indexes_cached_fields_once() {
        let mut encoder = Encoder::default();
        let mut decoder = Decoder::new(4096, 65536);
        let mut first = BytesMut::new();
        encoder.begin(&mut first);
        encoder.cached(&mut first, ":status", "200");
        encoder.cached(&mut first, "content-type", "application/grpc");
        let mut second = BytesMut::new();
        encoder.begin(&mut second);
        encoder.cached(&mut second, ":status", "200");
        encoder.cached(&mut second, "content-type", "application/grpc");
        encoder.literal(&mut second, b"grpc-message", b"hi");
        assert_eq!(&second[..2], &[0x88, 0xBE]);
        let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            decode_all(&mut decoder, &first).unwrap(),
            expect(&[(":status", "200"), ("content-type", "application/grpc")])
        );
        assert_eq!(
            decode_all(&mut decoder, &second).unwrap(),
            expect(&[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-message", "hi")
            ])
        );
        // The client shrinks its table to nothing: the next block says so, and indexes nothing.
        encoder.set_max_size(0);
        let mut third = BytesMut::new();
        encoder.begin(&mut third);
        encoder.cached(&mut third, "content-type", "application/grpc");
        assert_eq!(third[0], 0x20);
        assert_eq!(
            decode_all(&mut decoder, &third).unwrap(),
            expect(&[("content-type", "application/grpc")])
        );
    }

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(":path".to_string()),
            Just("content-type".to_string()),
            Just("grpc-timeout".to_string()),
            "[a-z0-9-]{1,20}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes at all: an error or fields, never a panic.
        #[test]
        fn any_block_decodes_or_fails_without_panicking(
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
            limit in 0usize..5000,
        ) {
            let mut decoder = Decoder::new(limit, 1024);
            for block in blocks {
                let _ = decode_all(&mut decoder, &block);
            }
        }

        /// Huffman coding round-trips any bytes.
        #[test]
        fn huffman_round_trips(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut coded = Vec::new();
            huffman_encode(&input, &mut coded);
            prop_assert_eq!(huffman_decode(&coded).unwrap(), input);
        }

        /// Any bytes decode as another Huffman decoder decodes them, or fail where it fails.
        #[test]
        fn huffman_decoding_agrees_with_another_decoder(input in proptest::collection::vec(any::<u8>(), 0..24)) {
            let theirs = fluke_hpack::huffman::HuffmanDecoder::new().decode(&input).ok();
            prop_assert_eq!(huffman_decode(&input).ok(), theirs);
        }

        /// Huffman strings sent again and again (literals without indexing, as the `h2`
        /// crate sends `:path`) decode as they did the first time, however many others come
        /// between: the decoder's memory of recent strings never answers for another.
        #[test]
        fn repeated_huffman_strings_decode_alike(
            pool in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..90), 1..10),
            picks in proptest::collection::vec((any::<proptest::sample::Index>(), any::<bool>()), 1..40),
        ) {
            let mut decoder = Decoder::new(4096, 65536);
            for chunk in picks.chunks(3) {
                let mut block = BytesMut::new();
                let mut expected = Vec::new();
                for (pick, never_indexed) in chunk {
                    let value = pool[pick.index(pool.len())].clone();
                    // Literal without indexing (0000) or never indexed (0001), new name "x".
                    block.put_u8(if *never_indexed { 0x10 } else { 0x00 });
                    block.put_u8(1);
                    block.put_u8(b'x');
                    let mut coded = Vec::new();
                    huffman_encode(&value, &mut coded);
                    put_integer(&mut block, coded.len(), 7, 0x80);
                    block.put_slice(&coded);
                    expected.push(("x".to_string(), value));
                }
                let mut decoded = Vec::new();
                decoder
                    .decode(&block.freeze(), |f| decoded.push((String::from_utf8(f.name.to_vec()).unwrap(), f.value.to_vec())))
                    .unwrap();
                prop_assert_eq!(decoded, expected);
            }
        }

        /// What another HPACK encoder writes, with its dynamic table, decodes to what it was
        /// given, block after block.
        #[test]
        fn another_encoders_blocks_decode_to_their_fields(
            blocks in proptest::collection::vec(
                proptest::collection::vec((header_name(), "[ -~]{0,40}"), 0..8), 1..8),
        ) {
            let mut theirs = fluke_hpack::Encoder::new();
            let mut ours = Decoder::new(4096, 65536);
            for block in blocks {
                let encoded = theirs.encode(block.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
                let decoded = decode_all(&mut ours, &encoded).unwrap();
                prop_assert_eq!(decoded, block);
            }
        }

        /// What this encoder writes, another decoder reads back (blocks with at least one
        /// field: this server never sends an empty one).
        #[test]
        fn our_blocks_decode_elsewhere(
            blocks in proptest::collection::vec(
                proptest::collection::vec((header_name(), "[ -~]{0,40}", any::<bool>()), 1..8), 1..8),
            resize in proptest::option::of(0usize..200),
        ) {
            let mut ours = Encoder::default();
            let mut theirs = fluke_hpack::Decoder::new();
            for (i, block) in blocks.iter().enumerate() {
                if i == 1 && let Some(size) = resize {
                    ours.set_max_size(size);
                }
                let mut out = BytesMut::new();
                ours.begin(&mut out);
                for (name, value, cached) in block {
                    if *cached {
                        let name: &'static str = Box::leak(name.clone().into_boxed_str());
                        let value: &'static str = Box::leak(value.clone().into_boxed_str());
                        ours.cached(&mut out, name, value);
                    } else {
                        ours.literal(&mut out, name.as_bytes(), value.as_bytes());
                    }
                }
                let decoded = theirs.decode(&out).unwrap();
                let decoded: Vec<(String, String)> = decoded
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                    .collect();
                let wanted: Vec<(String, String)> =
                    block.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
                prop_assert_eq!(decoded, wanted);
            }
        }
    }
}
