//! Etags: decimal strings of one database-wide, strictly increasing 64-bit sequence.
//!
//! Because the sequence never repeats (it survives reopen, and jumps after an unclean
//! shutdown, see `docs/design.md`), a key deleted and written again never gets an etag it had
//! before, so a stale etag can never match by accident (no ABA).

use std::fmt;

use crate::error::Error;

/// The etag of a stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Etag(u64);

impl Etag {
    pub(crate) fn new(sequence: u64) -> Etag {
        Etag(sequence)
    }

    /// The sequence number behind the etag.
    pub fn sequence(self) -> u64 {
        self.0
    }

    /// Parses an etag sent by a client.
    ///
    /// `""` means "no etag" (`Ok(None)`), as in Dapr. Anything but a canonical decimal
    /// `u64` (digits only, no sign, no leading zero, no whitespace) is [`Error::InvalidEtag`]:
    /// such a string can never equal an etag Roost handed out.
    pub fn parse(text: &str) -> Result<Option<Etag>, Error> {
        if text.is_empty() {
            return Ok(None);
        }
        let canonical = text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'))
            && text.len() <= 20;
        match text.parse::<u64>() {
            Ok(n) if canonical => Ok(Some(Etag(n))),
            _ => Err(Error::InvalidEtag {
                etag: text.chars().take(64).collect(),
            }),
        }
    }

    /// The etag as its decimal text (what `to_string` gives), without the formatting
    /// machinery: every read answer carries one.
    pub fn to_decimal(&self) -> String {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = self.0;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        String::from_utf8(digits[at..].to_vec()).expect("ASCII digits")
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decimal_text_is_the_display_text() {
        for n in [
            0,
            1,
            9,
            10,
            42,
            99,
            100,
            12_345,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(Etag(n).to_decimal(), n.to_string());
            assert_eq!(Etag::parse(&Etag(n).to_decimal()).unwrap(), Some(Etag(n)));
        }
    }

    #[test]
    fn parse_accepts_only_canonical_decimals() {
        assert_eq!(Etag::parse("").unwrap(), None);
        assert_eq!(Etag::parse("42").unwrap(), Some(Etag(42)));
        assert_eq!(Etag::parse("0").unwrap(), Some(Etag(0)));
        assert_eq!(
            Etag::parse("18446744073709551615").unwrap(),
            Some(Etag(u64::MAX))
        );
        for bad in [
            "bad-etag",
            "e9b9e142-74b1-4a2e-8e90-3f4ffeea2e70",
            "+1",
            "-1",
            " 1",
            "1 ",
            "007",
            "1.0",
            "18446744073709551616",
            "١٢",
        ] {
            assert!(
                matches!(Etag::parse(bad), Err(Error::InvalidEtag { .. })),
                "{bad:?} must be invalid"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        let etag = Etag::new(1234567890123);
        assert_eq!(Etag::parse(&etag.to_string()).unwrap(), Some(etag));
    }
}
