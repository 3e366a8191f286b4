//! Printing: aligned tables and key/value blocks for people, the API's JSON
//! mapping for scripts, and the small formatting helpers both use.

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use ctrl_proto::ctrl::v1 as pb;
use serde::Serialize;

/// Writes `value` as pretty JSON on stdout.
pub fn json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table printed with each column as wide as its widest cell.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it on stdout, or `empty` when it has no rows.
    pub fn print(&self, empty: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if self.is_empty() {
            writeln!(out, "{empty}")?;
            return Ok(());
        }
        for line in self.lines() {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// Whether it has no rows (only headers).
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 1
    }

    /// Its lines, headers first, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (c, cell) in row.iter().enumerate() {
                    if c + 1 == columns {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                    }
                }
                line.trim_end().to_owned()
            })
            .collect()
    }
}

/// Prints `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in field_lines(pairs) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The lines [`fields`] prints.
pub fn field_lines(pairs: &[(&str, String)]) -> Vec<String> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}"))
        .collect()
}

/// An enum's proto name without its prefix, in lower case:
/// `DEPLOYMENT_STATUS_READY` → `ready`.
pub fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
        .replace('_', " ")
}

/// A deployment status as a word.
pub fn status(value: i32) -> String {
    pb::DeploymentStatus::try_from(value).map_or_else(
        |_| format!("status {value}"),
        |s| enum_name(s.as_str_name(), "DEPLOYMENT_STATUS_"),
    )
}

/// The status a word names (`ready`, `failed`, …).
pub fn parse_status(word: &str) -> Result<pb::DeploymentStatus> {
    let name = format!(
        "DEPLOYMENT_STATUS_{}",
        word.trim().to_ascii_uppercase().replace(['-', ' '], "_")
    );
    match pb::DeploymentStatus::from_str_name(&name) {
        Some(s) if s != pb::DeploymentStatus::Unspecified => Ok(s),
        _ => bail!(
            "unknown status {word:?}; one of: pending, starting, building, deploying, network, \
             finalizing, ready, failed, skipped, awaiting-approval, stopped, superseded, cancelled"
        ),
    }
}

/// A step kind as a word.
pub fn step_kind(value: i32) -> String {
    pb::DeploymentStepKind::try_from(value).map_or_else(
        |_| format!("step {value}"),
        |s| enum_name(s.as_str_name(), "DEPLOYMENT_STEP_KIND_"),
    )
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// "5s ago", "3m ago", "2h ago", "4d ago".
pub fn ago(ms: i64) -> String {
    ago_at(ms, now_ms())
}

/// [`ago`] as seen at `now` (milliseconds since the epoch); `-` for 0.
pub fn ago_at(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    format!("{} ago", span((now - ms).max(0) / 1000))
}

/// How far ahead `ms` is at `now`: "in 5s", "in 3m", "in 2h", "in 89d",
/// or [`ago_at`]'s words once it has passed.
pub fn until_at(ms: i64, now: i64) -> String {
    if ms < now {
        return ago_at(ms, now);
    }
    format!("in {}", span((ms - now) / 1000))
}

/// Seconds in the largest whole unit: "5s", "3m", "2h", "4d".
fn span(secs: i64) -> String {
    match secs {
        ..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The UTC calendar date of `ms` (milliseconds since the epoch), e.g.
/// "2027-03-01".
pub fn date(ms: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `ms` (milliseconds since the epoch) as an RFC 3339 UTC time with
/// milliseconds, e.g. "2027-03-01T09:05:07.042Z".
pub fn timestamp(ms: i64) -> String {
    let of_day = ms.rem_euclid(86_400_000);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date(ms),
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A duration in milliseconds as "850ms", "4.2s" or "2m05s".
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Asks before a destructive command: `--yes` skips the question; without a
/// terminal to ask on, the command is refused.
pub fn confirm(yes: bool, question: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without a terminal to confirm on; pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled; nothing was deleted")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        assert_eq!(ago_at(0, NOW), "-");
        assert_eq!(ago_at(NOW, NOW), "0s ago");
        assert_eq!(ago_at(NOW + 5000, NOW), "0s ago", "a clock ahead is now");
        assert_eq!(ago_at(NOW - 59_999, NOW), "59s ago");
        assert_eq!(ago_at(NOW - 60_000, NOW), "1m ago");
        assert_eq!(ago_at(NOW - 3_599_000, NOW), "59m ago");
        assert_eq!(ago_at(NOW - 7_200_000, NOW), "2h ago");
        assert_eq!(ago_at(NOW - 4 * 86_400_000, NOW), "4d ago");
        assert_eq!(until_at(NOW + 90_000, NOW), "in 1m");
        assert_eq!(until_at(NOW + 89 * 86_400_000, NOW), "in 89d");
        assert_eq!(until_at(NOW - 3_600_000, NOW), "1h ago");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(date(1_803_906_000_000), "2027-03-01");
        assert_eq!(date(4_102_444_799_999), "2099-12-31");
        assert_eq!(timestamp(1_803_859_200_000), "2027-03-01T00:00:00.000Z");
        assert_eq!(
            timestamp(1_803_859_200_000 + 32_707_042),
            "2027-03-01T09:05:07.042Z"
        );
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn clipped_text_ends_in_an_ellipsis() {
        assert_eq!(clip("short", 5), "short");
        assert_eq!(clip("longer", 5), "long…");
        assert_eq!(clip("ééééé-é", 3), "éé…");
    }

    #[test]
    fn tables_align_columns_by_characters() {
        let mut table = Table::new(&["", "NAME", "VALUE"]);
        assert!(table.is_empty());
        table.row(vec!["✓".into(), "é.example".into(), "a".into()]);
        table.row(vec!["✗".into(), "b".into(), String::new()]);
        assert!(!table.is_empty());
        assert_eq!(
            table.lines(),
            ["   NAME       VALUE", "✓  é.example  a", "✗  b"]
        );
        assert_eq!(
            field_lines(&[("id", "x".into()), ("status", "ready".into())]),
            ["id      x", "status  ready"]
        );
    }
}
