//! Instants and durations on the wire: RFC 3339 UTC timestamps with microseconds (what Flock's
//! Pydantic models write for `created_at`) and ISO-8601 durations (what Pydantic writes for a
//! `timedelta`, e.g. `P7D`, `PT1H30M`, `P1DT0.5S`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    micros: i64,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            micros: since.as_micros() as i64,
        }
    }

    pub fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp { micros }
    }

    pub fn unix_micros(self) -> i64 {
        self.micros
    }

    /// This instant plus `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Timestamp {
        Timestamp {
            micros: self
                .micros
                .saturating_add(duration.as_micros().min(i64::MAX as u128) as i64),
        }
    }

    /// Parses RFC 3339: `2026-11-26T13:45:00Z`, with optional fraction and a `Z` or `±HH:MM`
    /// offset (`+00:00` is what Python's `isoformat` writes).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let bad = || format!("{text:?} is not an RFC 3339 timestamp");
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
            let s = text.get(range).ok_or_else(bad)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(bad());
        }
        let mut rest = &text[19..];
        let mut micros = 0i64;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let mut scaled = 0i64;
            for (i, c) in fraction[..digits].bytes().enumerate() {
                if i < 6 {
                    scaled = scaled * 10 + i64::from(c - b'0');
                }
            }
            for _ in digits..6 {
                scaled *= 10;
            }
            micros = scaled;
            rest = &fraction[digits..];
        }
        let offset_seconds = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':' =>
            {
                let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
                let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
                let sign = if rest.starts_with('-') { -1 } else { 1 };
                sign * (h * 3600 + m * 60)
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(year, month as u32, day as u32);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
        Ok(Timestamp {
            micros: seconds * 1_000_000 + micros,
        })
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: fixed width, so text order is time order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.micros.div_euclid(1_000_000);
        let micros = self.micros.rem_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let rem = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Parses an ISO-8601 duration: `P[nW][nD][T[nH][nM][n[.f]S]]`. Years and months are refused
/// (their length depends on the calendar; Pydantic never writes them for a `timedelta`), as
/// are negative durations.
pub fn parse_iso_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not an ISO-8601 duration: {why}");
    let body = text
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P"))?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => {
            if time.is_empty() {
                return Err(bad("T with no time part"));
            }
            (date, Some(time))
        }
        None => (body, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(bad("no components"));
    }
    let mut micros: u128 = 0;
    let mut parse_part = |part: &str, units: &[(char, u128)]| -> Result<(), String> {
        let mut number = String::new();
        let mut last_unit = None::<usize>;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let position = units
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(|| bad(&format!("unit {c:?} is not supported here")))?;
            if last_unit.is_some_and(|last| position <= last) || number.is_empty() {
                return Err(bad("components out of order or without a number"));
            }
            let value: f64 = number.parse().map_err(|_| bad("bad number"))?;
            if !value.is_finite() {
                return Err(bad("bad number"));
            }
            micros += (value * units[position].1 as f64).round() as u128;
            number.clear();
            last_unit = Some(position);
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad("a number without a unit"))
        }
    };
    const SECOND: u128 = 1_000_000;
    parse_part(date, &[('W', 7 * 86_400 * SECOND), ('D', 86_400 * SECOND)])?;
    if let Some(time) = time {
        parse_part(
            time,
            &[('H', 3600 * SECOND), ('M', 60 * SECOND), ('S', SECOND)],
        )?;
    }
    Ok(Duration::from_micros(micros.min(u64::MAX as u128) as u64))
}

/// Formats a duration as Pydantic does for a `timedelta`: `P7D`, `PT1H30M`, `P1DT2H0.5S`…
pub fn format_iso_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    let days = micros / (86_400 * 1_000_000);
    let mut rest = micros % (86_400 * 1_000_000);
    let hours = rest / 3_600_000_000;
    rest %= 3_600_000_000;
    let minutes = rest / 60_000_000;
    rest %= 60_000_000;
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || rest > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if rest > 0 || (hours == 0 && minutes == 0) {
            let whole = rest / 1_000_000;
            let fraction = rest % 1_000_000;
            if fraction == 0 {
                out.push_str(&format!("{whole}S"));
            } else {
                let text = format!("{whole}.{fraction:06}");
                out.push_str(text.trim_end_matches('0'));
                out.push('S');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_accept_offsets() {
        let t = Timestamp::parse("2026-11-26T13:45:07.123456Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-26T13:45:07.123456Z");
        assert_eq!(
            Timestamp::parse("2026-11-26T14:45:07.123456+01:00").unwrap(),
            t
        );
        assert_eq!(
            Timestamp::parse("2026-11-26T13:45:07.1234567Z").unwrap(),
            t,
            "digits past microseconds are dropped"
        );
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_micros(),
            0
        );
        assert_eq!(
            Timestamp::parse("2000-03-01T00:00:00.5Z")
                .unwrap()
                .unix_micros(),
            951_868_800_500_000
        );
        for bad in [
            "",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T13:45:07",
            "2026-11-26T13:45:07.Z",
            "2026-11-26T13:45:07+0100",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse(&now.to_string()).unwrap(), now);
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Timestamp::parse("2026-01-02T00:00:00Z").unwrap();
        let b = a.plus(Duration::from_micros(1));
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn iso_durations_cover_what_pydantic_writes() {
        let d = |s| parse_iso_duration(s).unwrap();
        assert_eq!(d("P7D"), Duration::from_secs(7 * 86_400));
        assert_eq!(d("PT1H30M"), Duration::from_secs(5400));
        assert_eq!(d("P1DT2H3M4.5S"), Duration::from_millis(93_784_500));
        assert_eq!(d("P2W"), Duration::from_secs(14 * 86_400));
        assert_eq!(d("PT0S"), Duration::ZERO);
        assert_eq!(d("PT0,25S"), Duration::from_millis(250));
        for bad in [
            "", "7D", "P", "PT", "P1Y", "P1M", "PT1S2M", "P1DT", "PT5", "-P1D", "PxD",
        ] {
            assert!(parse_iso_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn iso_durations_format_like_pydantic_and_round_trip() {
        let f = format_iso_duration;
        assert_eq!(f(Duration::from_secs(7 * 86_400)), "P7D");
        assert_eq!(f(Duration::from_secs(5400)), "PT1H30M");
        assert_eq!(f(Duration::from_millis(93_784_500)), "P1DT2H3M4.5S");
        assert_eq!(f(Duration::ZERO), "PT0S");
        for secs in [0.0, 0.25, 59.0, 3600.0, 86_400.0, 691_261.75] {
            let d = Duration::from_secs_f64(secs);
            assert_eq!(parse_iso_duration(&f(d)).unwrap(), d, "{}", f(d));
        }
    }
}
