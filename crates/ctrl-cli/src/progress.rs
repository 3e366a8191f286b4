//! The deploy progress display: one line per step, redrawn in place with a
//! spinner on a terminal, or one plain line per change of a step when the
//! output is not a terminal (logs, CI, pipes). Both write to stderr, so
//! stdout carries only the result.
//!
//! A build's output joins in: on a terminal the building step's line shows
//! its latest line (every line with `--verbose`); plain output prints every
//! line as `  │ …`. Also here: the spinner while a build context is packed
//! and the bar while it is uploaded (on a terminal only; the caller prints
//! one plain line when they are done).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use ctrl_proto::ctrl::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{duration, now_ms, step_kind};

/// Shows a deployment's steps as they change.
#[derive(Debug)]
pub enum Progress {
    /// Spinners redrawn in place.
    Live(Live),
    /// A line per change.
    Plain(Plain),
}

impl Progress {
    /// The live display on a terminal, plain lines otherwise.
    pub fn new(terminal: bool) -> Self {
        if terminal {
            Self::Live(Live::default())
        } else {
            Self::Plain(Plain::default())
        }
    }

    /// On a terminal, prints every build line above the steps instead of
    /// only the latest one in the building step's line (plain output
    /// always prints every line).
    pub fn verbose(mut self, yes: bool) -> Self {
        if let Self::Live(live) = &mut self {
            live.verbose = yes;
        }
        self
    }

    /// Shows lines of the deployment's build output.
    pub fn build_lines(&mut self, lines: &[pb::BuildLogLine]) {
        match self {
            Self::Live(live) => live.build_lines(lines),
            Self::Plain(plain) => {
                plain.build_output = plain.build_output || !lines.is_empty();
                let mut err = std::io::stderr().lock();
                for line in lines {
                    let _ = writeln!(err, "{BUILD_PREFIX}{}", terminal_safe(&line.text));
                }
            }
        }
    }

    /// Shows the deployment as it is now.
    pub fn update(&mut self, d: &pb::Deployment) {
        for step in &d.steps {
            match self {
                Self::Live(live) => live.step(step),
                Self::Plain(plain) => plain.step(step),
            }
        }
    }

    /// Stops drawing at once (on Ctrl-C): the screen keeps its last frame,
    /// and nothing races the terminal's echo of the interrupt.
    pub fn interrupt(&mut self) {
        if let Self::Live(live) = self {
            live.multi.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    /// Ends the display: bars still spinning are left as they are.
    pub fn finish(&mut self) {
        if let Self::Live(live) = self {
            for bar in live.bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

/// How a build's output line starts when printed.
pub const BUILD_PREFIX: &str = "  │ ";

/// Where a step's line is, and whether it ended.
#[derive(Debug)]
pub struct Live {
    multi: MultiProgress,
    bars: HashMap<i32, ProgressBar>,
    /// Print every build line (else only the latest, in the building step).
    verbose: bool,
    /// The building step's own message, and the build's latest line.
    building: (String, String),
}

impl Default for Live {
    fn default() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
            verbose: false,
            building: (String::new(), String::new()),
        }
    }
}

impl Live {
    fn build_lines(&mut self, lines: &[pb::BuildLogLine]) {
        if self.verbose {
            for line in lines {
                let _ = self
                    .multi
                    .println(format!("{BUILD_PREFIX}{}", terminal_safe(&line.text)));
            }
            return;
        }
        let Some(last) = lines
            .iter()
            .rev()
            .map(|l| terminal_safe(&l.text))
            .find(|t| !t.trim().is_empty())
        else {
            return;
        };
        self.building.1 = last.trim().to_owned();
        if let Some(bar) = self.bars.get(&(pb::DeploymentStepKind::Building as i32))
            && !bar.is_finished()
        {
            bar.set_message(building_message(&self.building.0, &self.building.1));
        }
    }

    fn step(&mut self, step: &pb::DeploymentStep) {
        let bar = self.bars.entry(step.kind).or_insert_with(|| {
            let running_for = (now_ms() - step.started_at).max(0);
            let bar = self.multi.add(
                ProgressBar::new_spinner()
                    .with_style(style(
                        "  {spinner:.cyan} {prefix:<10.bold} {elapsed:>4}  {wide_msg:.dim}",
                    ))
                    .with_prefix(step_kind(step.kind))
                    .with_elapsed(Duration::from_millis(running_for.unsigned_abs())),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if bar.is_finished() {
            return;
        }
        match pb::DeploymentStepStatus::try_from(step.status) {
            Ok(pb::DeploymentStepStatus::Succeeded) => {
                bar.set_style(style("  {prefix:.green} {msg}"));
                bar.set_prefix("✓");
                bar.finish_with_message(ended_line(step, first_line(&step.message)));
            }
            Ok(pb::DeploymentStepStatus::Failed) => {
                bar.set_style(style("  {prefix:.red.bold} {msg}"));
                bar.set_prefix("✗");
                bar.finish_with_message(ended_line(step, first_line(&step.error_message)));
            }
            _ if step.kind == pb::DeploymentStepKind::Building as i32 => {
                self.building.0 = first_line(&step.message).to_owned();
                bar.set_message(building_message(&self.building.0, &self.building.1));
            }
            _ => bar.set_message(first_line(&step.message).to_owned()),
        }
    }
}

/// The building step's live message: its own (the build's current step,
/// or what it waits for) and the build's latest line.
fn building_message(step: &str, last_line: &str) -> String {
    match (step.is_empty(), last_line.is_empty()) {
        (_, true) => step.to_owned(),
        (true, false) => last_line.to_owned(),
        (false, false) if last_line == step => step.to_owned(),
        (false, false) => format!("{step} · {last_line}"),
    }
}

/// A message's first line: a failed build's error goes on with its last
/// output lines, which the final error prints in full.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// Text from a build as it can be drawn on a terminal: colour and other
/// escape sequences and control characters removed, a tab as a space, and
/// of a line redrawn with carriage returns only its last state.
pub fn terminal_safe(text: &str) -> String {
    let text = text.trim_end_matches(['\r', '\n']);
    let text = text.rsplit('\r').next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final character in @..=~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The packing spinner's line.
const PACKING: &str = "  {spinner:.cyan} {msg:.dim} {elapsed:.dim}";

/// The upload bar's line: bytes sent of all, the rate, time left.
const UPLOADING: &str = "  {spinner:.cyan} Uploading {bar:28.cyan/dim} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12}  {eta:.dim}";

/// A spinner while a build context is packed (hidden when not on a
/// terminal).
pub fn packing(terminal: bool, what: &str) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style(PACKING))
        .with_message(format!("Packing {what}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar of the bytes of an upload sent, with the rate (hidden when not on
/// a terminal; it still counts).
pub fn uploading(terminal: bool, total: u64) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template(UPLOADING)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
            .progress_chars("━╸─"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// `text` dimmed on a terminal (a secondary line), as is otherwise.
pub fn dim(text: &str, terminal: bool) -> String {
    if terminal {
        format!("\u{1b}[2m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

/// "deploying    3.1s  1 instance ready in local"
fn ended_line(step: &pb::DeploymentStep, message: &str) -> String {
    format!(
        "{:<10} {:>6}  {message}",
        step_kind(step.kind),
        duration(step.ended_at - step.started_at)
    )
}

/// What was last printed for each step.
#[derive(Debug, Default)]
pub struct Plain {
    printed: HashMap<i32, (i32, String)>,
    /// Whether build output is printed: it shows the build's steps, so the
    /// running building step's messages (the same steps) are not.
    build_output: bool,
}

impl Plain {
    fn step(&mut self, step: &pb::DeploymentStep) {
        let ended = step.status != pb::DeploymentStepStatus::Running as i32;
        if !ended && self.build_output && step.kind == pb::DeploymentStepKind::Building as i32 {
            return;
        }
        let message = first_line(if step.error_message.is_empty() {
            &step.message
        } else {
            &step.error_message
        });
        let seen = (step.status, message.to_owned());
        if self.printed.get(&step.kind) == Some(&seen) {
            return;
        }
        self.printed.insert(step.kind, seen);
        let word = match pb::DeploymentStepStatus::try_from(step.status) {
            Ok(pb::DeploymentStepStatus::Succeeded) => "done",
            Ok(pb::DeploymentStepStatus::Failed) => "failed",
            _ => "running",
        };
        let took = if ended {
            format!(" {:>6}", duration(step.ended_at - step.started_at))
        } else {
            String::new()
        };
        let _ = writeln!(
            std::io::stderr(),
            "  {:<10} {word:<7}{took}  {message}",
            step_kind(step.kind)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_templates_parse() {
        for template in [PACKING, UPLOADING] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn build_output_is_made_safe_for_a_terminal() {
        assert_eq!(terminal_safe("plain line"), "plain line");
        assert_eq!(
            terminal_safe("\u{1b}[1;31merror\u{1b}[0m: failed\tbadly"),
            "error: failed badly"
        );
        assert_eq!(terminal_safe("10%\r50%\r100%\r\n"), "100%");
        assert_eq!(
            terminal_safe("\u{1b}]0;title\u{7}x\u{1b}]8;;http://a\u{1b}\\y\u{7}\u{0}"),
            "xy"
        );
    }

    #[test]
    fn the_building_step_shows_its_message_and_the_latest_line() {
        assert_eq!(
            building_message("Building from upload", ""),
            "Building from upload"
        );
        assert_eq!(building_message("", "#5 RUN make"), "#5 RUN make");
        assert_eq!(
            building_message("STEP 2/4: RUN make", "cc -o app main.c"),
            "STEP 2/4: RUN make · cc -o app main.c"
        );
        assert_eq!(
            building_message("STEP 2/4: RUN make", "STEP 2/4: RUN make"),
            "STEP 2/4: RUN make"
        );
        assert_eq!(
            first_line("Build failed: x.\nLast output:\ny"),
            "Build failed: x."
        );
    }
}
