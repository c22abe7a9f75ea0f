//! Time to live: parsing Dapr's `ttlInSeconds` and reporting expiry as RFC 3339 UTC.
//!
//! The rules are Dapr's shared parser's: an integer; `> 0` sets an expiry that many seconds
//! after the write; `-1`, `0`, an empty string or no value mean "no expiry" (a write without
//! a TTL clears an earlier one); anything else, values below -1 and values above 2^31-1 are
//! errors.

use crate::error::Error;

/// The TTL of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// No expiry; clears any earlier expiry of the key.
    #[default]
    Never,
    /// Expire this many seconds after the write is applied (1 ..= 2^31-1).
    Seconds(u32),
}

impl Ttl {
    /// The largest accepted `ttlInSeconds`, as in Dapr (`math.MaxInt32`).
    pub const MAX_SECONDS: u32 = i32::MAX as u32;

    /// Parses the `ttlInSeconds` metadata value; `None` (no such key) means no expiry.
    pub fn parse(value: Option<&str>) -> Result<Ttl, Error> {
        let Some(text) = value else {
            return Ok(Ttl::Never);
        };
        if text.is_empty() {
            return Ok(Ttl::Never);
        }
        let invalid = |reason| Error::InvalidTtl {
            value: text.chars().take(64).collect(),
            reason,
        };
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("not an integer"));
        }
        let seconds: i64 = text
            .parse()
            .map_err(|_| invalid("out of range (above 2147483647)"))?;
        match seconds {
            i64::MIN..=-2 => Err(invalid("below -1")),
            -1 | 0 => Ok(Ttl::Never),
            s if s > i64::from(Ttl::MAX_SECONDS) => Err(invalid("above 2147483647")),
            s => Ok(Ttl::Seconds(s as u32)),
        }
    }

    /// The expiry, in Unix milliseconds, of a write applied at `now_unix_ms`.
    pub(crate) fn expiry_from(self, now_unix_ms: u64) -> Option<u64> {
        match self {
            Ttl::Never => None,
            Ttl::Seconds(s) => Some(now_unix_ms.saturating_add(u64::from(s) * 1000)),
        }
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC with whole seconds, e.g. `2026-08-21T12:00:00Z`
/// (the form Dapr stores report in `ttlExpireTime`). Sub-second expiries round up, so the
/// reported time is never before the record actually expires.
pub fn format_rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms.div_ceil(1000);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_follows_dapr_rules() {
        assert_eq!(Ttl::parse(None).unwrap(), Ttl::Never);
        assert_eq!(Ttl::parse(Some("")).unwrap(), Ttl::Never);
        assert_eq!(Ttl::parse(Some("-1")).unwrap(), Ttl::Never);
        assert_eq!(Ttl::parse(Some("0")).unwrap(), Ttl::Never);
        assert_eq!(Ttl::parse(Some("2")).unwrap(), Ttl::Seconds(2));
        assert_eq!(
            Ttl::parse(Some("2147483647")).unwrap(),
            Ttl::Seconds(2_147_483_647)
        );
        for bad in [
            "foo",
            "1.5",
            "-2",
            "2147483648",
            "99999999999999999999999",
            " 1",
            "+1",
            "-",
            "1e3",
        ] {
            assert!(
                matches!(Ttl::parse(Some(bad)), Err(Error::InvalidTtl { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_787_313_600_000), "2026-08-21T12:00:00Z");
        assert_eq!(format_rfc3339(4_107_542_399_000), "2100-02-28T23:59:59Z");
        // Sub-second expiry rounds up to the next whole second.
        assert_eq!(format_rfc3339(1_787_313_600_001), "2026-08-21T12:00:01Z");
    }
}
