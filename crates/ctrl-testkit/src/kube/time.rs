//! Timestamps as the API server writes them (`metav1.Time`: RFC 3339 in
//! seconds; logs: RFC 3339 with nanoseconds) and reads them.

use std::time::{Duration, SystemTime};

use crate::clock::rfc3339;

/// Unix time of `t` (seconds, nanoseconds).
fn unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => (0, 0),
    }
}

/// `2024-05-01T12:00:00Z`.
pub(crate) fn seconds(t: SystemTime) -> String {
    rfc3339(unix(t).0)
}

/// `2024-05-01T12:00:00.123456789Z`.
pub(crate) fn nanos(t: SystemTime) -> String {
    let (secs, nanos) = unix(t);
    let base = rfc3339(secs);
    format!("{}.{nanos:09}Z", base.trim_end_matches('Z'))
}

pub(crate) fn now() -> String {
    seconds(SystemTime::now())
}

/// Parses RFC 3339 (`Z` or `±hh:mm`, optional fraction).
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = text.get(start..i)?;
        let padded = format!("{frac:0<9}");
        nanos = padded.get(..9)?.parse().ok()?;
    }
    let offset = match text.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let h: i64 = tz.get(1..3)?.parse().ok()?;
            let m: i64 = tz.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A Go `time.Duration` string for whole seconds: `10s`, `1m20s`, `5m0s`.
pub(crate) fn go_duration(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        assert_eq!(nanos(t), "2024-05-01T12:00:00.123456789Z");
        assert_eq!(parse(&nanos(t)), Some(t));
        assert_eq!(
            parse("2024-05-01T14:00:00+02:00"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800))
        );
        assert_eq!(seconds(t), "2024-05-01T12:00:00Z");
        assert_eq!(go_duration(80), "1m20s");
        assert_eq!(go_duration(300), "5m0s");
    }
}
