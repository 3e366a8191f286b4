//! The deploy progress display: one line per step, redrawn in place with a
//! spinner on a terminal, or one plain line per change of a step when the
//! output is not a terminal (logs, CI, pipes). Both write to stderr, so
//! stdout carries only the result.

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

/// Where a step's line is, and whether it ended.
#[derive(Debug)]
pub struct Live {
    multi: MultiProgress,
    bars: HashMap<i32, ProgressBar>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
        }
    }
}

impl Live {
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
                bar.finish_with_message(ended_line(step, &step.message));
            }
            Ok(pb::DeploymentStepStatus::Failed) => {
                bar.set_style(style("  {prefix:.red.bold} {msg}"));
                bar.set_prefix("✗");
                bar.finish_with_message(ended_line(step, &step.error_message));
            }
            _ => bar.set_message(step.message.clone()),
        }
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
}

impl Plain {
    fn step(&mut self, step: &pb::DeploymentStep) {
        let ended = step.status != pb::DeploymentStepStatus::Running as i32;
        let message = if step.error_message.is_empty() {
            &step.message
        } else {
            &step.error_message
        };
        let seen = (step.status, message.clone());
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
