//! The one timestamp format GitHub uses: RFC 3339 ("2011-04-14T16:00:49Z").

/// Unix milliseconds of an RFC 3339 timestamp: a date, `T` (or a space), a
/// time with optional fractional seconds, and `Z` or a `±hh:mm` offset.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = (s.get(..10)?, s.get(10..)?);
    let sep = rest.chars().next()?;
    if !matches!(sep, 'T' | 't' | ' ') {
        return None;
    }
    let rest = &rest[1..];
    let (y, m, d) = (
        number(date.get(0..4)?)?,
        number(date.get(5..7)?)?,
        number(date.get(8..10)?)?,
    );
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=days_in_month(y, m)).contains(&d) {
        return None;
    }
    let time = rest.get(..8)?;
    let (hh, mm, ss) = (
        number(time.get(0..2)?)?,
        number(time.get(3..5)?)?,
        number(time.get(6..8)?)?,
    );
    if time.as_bytes()[2] != b':' || time.as_bytes()[5] != b':' || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &rest[8..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = number(&padded)?;
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (oh, om) = (number(rest.get(1..3)?)?, number(rest.get(4..6)?)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset_secs;
    Some(secs * 1000 + millis)
}

fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ms;

    #[test]
    fn github_timestamps() {
        let check = |s: &str, want: Option<i64>| assert_eq!(parse_rfc3339_ms(s), want, "{s}");
        check("1970-01-01T00:00:00Z", Some(0));
        check("2011-04-14T16:00:49Z", Some(1_302_796_849_000));
        check("2011-04-14T16:00:49.250Z", Some(1_302_796_849_250));
        check("2011-04-14T16:00:49.2Z", Some(1_302_796_849_200));
        check("2011-04-14T18:00:49+02:00", Some(1_302_796_849_000));
        check("2011-04-14T11:00:49-05:00", Some(1_302_796_849_000));
        check("2024-02-29T00:00:00Z", Some(1_709_164_800_000));
        check("2023-02-29T00:00:00Z", None);
        check("2011-04-14T16:00:49", None);
        check("2011-04-14", None);
        check("2011-13-14T16:00:49Z", None);
        check("2011-04-14T16:00:49.Z", None);
        check("2011-04-14T16:00:49+0200", None);
        check("", None);
    }
}
