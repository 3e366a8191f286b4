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
        if self.rows.len() == 1 {
            writeln!(out, "{empty}")?;
            return Ok(());
        }
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
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Prints `label: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> Result<()> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (key, value) in pairs {
        writeln!(out, "{key:<width$}  {value}")?;
    }
    Ok(())
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
    if ms <= 0 {
        return "-".into();
    }
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
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
