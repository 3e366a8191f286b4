//! The deployment status machine, desired state and progress steps.
//!
//! The database stores these as the lowercase names returned by `as_str`;
//! the API maps them to the `ctrl.v1` enums.

use std::fmt;
use std::str::FromStr;

/// Where a deployment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentStatus {
    /// Recorded; the workflow has not started.
    Pending,
    /// Waiting for approval (e.g. a fork's pull request).
    AwaitingApproval,
    /// Loading context.
    Starting,
    /// Building or resolving the image.
    Building,
    /// Starting instances and waiting for health.
    Deploying,
    /// Assigning routes.
    Network,
    /// Going live / retiring older deployments.
    Finalizing,
    /// Serving traffic.
    Ready,
    /// Failed.
    Failed,
    /// Not deployed on purpose.
    Skipped,
    /// Instances stopped.
    Stopped,
    /// Replaced by a newer deployment before finishing.
    Superseded,
    /// Cancelled by a user.
    Cancelled,
}

use DeploymentStatus as S;

impl DeploymentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 13] = [
        S::Pending,
        S::AwaitingApproval,
        S::Starting,
        S::Building,
        S::Deploying,
        S::Network,
        S::Finalizing,
        S::Ready,
        S::Failed,
        S::Skipped,
        S::Stopped,
        S::Superseded,
        S::Cancelled,
    ];

    /// The database and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            S::Pending => "pending",
            S::AwaitingApproval => "awaiting_approval",
            S::Starting => "starting",
            S::Building => "building",
            S::Deploying => "deploying",
            S::Network => "network",
            S::Finalizing => "finalizing",
            S::Ready => "ready",
            S::Failed => "failed",
            S::Skipped => "skipped",
            S::Stopped => "stopped",
            S::Superseded => "superseded",
            S::Cancelled => "cancelled",
        }
    }

    /// The workflow is done with it: ready, failed, skipped, stopped,
    /// superseded or cancelled. ("Ready" counts: the workflow ended.)
    pub fn is_terminal(self) -> bool {
        !self.is_progressing()
    }

    /// Still on its way: pending, awaiting approval, or one of the pipeline phases.
    pub fn is_progressing(self) -> bool {
        matches!(
            self,
            S::Pending
                | S::AwaitingApproval
                | S::Starting
                | S::Building
                | S::Deploying
                | S::Network
                | S::Finalizing
        )
    }

    /// No way out: failed, skipped, superseded, cancelled. (Ready and
    /// stopped can still move between each other.)
    pub fn is_final(self) -> bool {
        matches!(self, S::Failed | S::Skipped | S::Superseded | S::Cancelled)
    }

    /// Counts as "active" for superseding: anything but failed, skipped,
    /// stopped, superseded and cancelled (so ready counts as active).
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            S::Failed | S::Skipped | S::Stopped | S::Superseded | S::Cancelled
        )
    }

    /// Position of a pipeline phase (pending → ready), `None` otherwise.
    fn phase(self) -> Option<u8> {
        Some(match self {
            S::Pending => 0,
            S::Starting => 1,
            S::Building => 2,
            S::Deploying => 3,
            S::Network => 4,
            S::Finalizing => 5,
            S::Ready => 6,
            _ => return None,
        })
    }

    /// Whether the status may change from `self` to `to`.
    ///
    /// - pipeline phases only move forward (phases may be skipped, e.g. no build);
    /// - pending ⇄ awaiting approval;
    /// - anything progressing may fail or be cancelled;
    /// - superseded only before instances start (pending … building);
    /// - skipped only before the pipeline starts;
    /// - ready ⇄ stopped (stop and wake);
    /// - waking: stopped (or ready and still stopping) → deploying, then
    ///   ready, or back to stopped when the instances cannot start;
    /// - final statuses never change; no status changes to itself.
    pub fn can_transition_to(self, to: Self) -> bool {
        if self == to || self.is_final() {
            return false;
        }
        match (self, to) {
            (S::Pending, S::AwaitingApproval) | (S::AwaitingApproval, S::Pending) => true,
            (S::Pending | S::AwaitingApproval, S::Skipped) => true,
            (S::Pending | S::AwaitingApproval | S::Starting | S::Building, S::Superseded) => true,
            (from, S::Failed | S::Cancelled) => from.is_progressing(),
            (S::Ready, S::Stopped) | (S::Stopped, S::Ready) => true,
            (S::Stopped | S::Ready, S::Deploying) | (S::Deploying, S::Stopped) => true,
            (from, to) => match (from.phase(), to.phase()) {
                (Some(a), Some(b)) => b > a && from != S::Ready,
                _ => false,
            },
        }
    }

    /// The progress step a pipeline status belongs to.
    pub fn step(self) -> Option<StepKind> {
        Some(match self {
            S::Pending | S::AwaitingApproval => StepKind::Queued,
            S::Starting => StepKind::Starting,
            S::Building => StepKind::Building,
            S::Deploying => StepKind::Deploying,
            S::Network => StepKind::Network,
            S::Finalizing => StepKind::Finalizing,
            _ => return None,
        })
    }
}

/// An unknown status, step or state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// What was being parsed.
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
}

impl FromStr for DeploymentStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "deployment status",
                value: s.to_owned(),
            })
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a deployment's instances should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredState {
    /// Instances should run.
    Running,
    /// Instances should be removed.
    Stopped,
}

impl DesiredState {
    /// The database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
}

impl FromStr for DesiredState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Self::Running),
            "stopped" => Ok(Self::Stopped),
            _ => Err(UnknownName {
                what: "desired state",
                value: s.to_owned(),
            }),
        }
    }
}

/// The progress phases shown to users, one `deployment_steps` row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// Waiting for the workflow.
    Queued,
    /// Loading context.
    Starting,
    /// Building or resolving the image.
    Building,
    /// Starting instances and waiting for health.
    Deploying,
    /// Assigning routes.
    Network,
    /// Going live or retiring older deployments.
    Finalizing,
}

impl StepKind {
    /// Every step, in order.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Starting,
        Self::Building,
        Self::Deploying,
        Self::Network,
        Self::Finalizing,
    ];

    /// The database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Building => "building",
            Self::Deploying => "deploying",
            Self::Network => "network",
            Self::Finalizing => "finalizing",
        }
    }
}

impl FromStr for StepKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "deployment step",
                value: s.to_owned(),
            })
    }
}

/// `TryFrom<String>` through `FromStr`, so the database crate can decode
/// these from their ENUM columns without ctrl-core knowing about sqlx.
macro_rules! try_from_string {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = UnknownName;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    )*};
}

try_from_string!(
    DeploymentStatus,
    DesiredState,
    StepKind,
    crate::domains::Sticky
);

/// Whether enough regions run enough instances for a deployment to be
/// ready. Each entry is one region's (minimum replicas, running instances).
/// All regions but one must be healthy (at least one), so a single regional
/// outage does not block every deploy.
pub fn enough_regions_ready(regions: &[(u32, u64)]) -> bool {
    if regions.is_empty() {
        return false;
    }
    let healthy = regions
        .iter()
        .filter(|(min, running)| *running >= u64::from((*min).max(1)))
        .count();
    healthy >= needed_regions(regions.len())
}

/// How many of `total` regions must be healthy: all but one, at least one.
fn needed_regions(total: usize) -> usize {
    total.saturating_sub(1).max(1)
}

/// One region of a deployment, as the readiness decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionReadiness {
    /// The region's name ("local", "us-east-1"), as users know it.
    pub region: String,
    /// Replicas that must run.
    pub min_replicas: u32,
    /// Instances running now.
    pub running: u64,
    /// The agent's latest problem running it there, in its words.
    pub problem: Option<String>,
    /// Attempts in a row that failed there.
    pub failed_attempts: u32,
}

impl RegionReadiness {
    fn healthy(&self) -> bool {
        self.running >= u64::from(self.min_replicas.max(1))
    }
}

/// Where a deployment waiting for its instances stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Readiness {
    /// Enough regions run it.
    Ready,
    /// Not yet; the problems the agents reported meanwhile ("local: image
    /// … not found (attempt 2 of 3)"), empty when none.
    Waiting(Vec<String>),
    /// Too many regions gave up (each failed `max_failed_attempts` times in
    /// a row) for enough of them to ever be ready: why, region by region.
    Failed(String),
}

/// Decides readiness with the same rule as [`enough_regions_ready`], and
/// fails as soon as the regions that failed `max_failed_attempts` times in a
/// row leave too few to reach it — instead of waiting for the timeout.
pub fn assess(regions: &[RegionReadiness], max_failed_attempts: u32) -> Readiness {
    if regions.is_empty() {
        return Readiness::Waiting(Vec::new());
    }
    let needed = needed_regions(regions.len());
    if regions.iter().filter(|r| r.healthy()).count() >= needed {
        return Readiness::Ready;
    }
    let max = max_failed_attempts.max(1);
    let lost: Vec<&RegionReadiness> = regions
        .iter()
        .filter(|r| !r.healthy() && r.failed_attempts >= max)
        .collect();
    if regions.len() - lost.len() < needed {
        let reasons: Vec<String> = lost
            .iter()
            .map(|r| {
                format!(
                    "{}: {} ({} failed attempts)",
                    r.region,
                    r.problem.as_deref().unwrap_or("could not run it"),
                    r.failed_attempts
                )
            })
            .collect();
        return Readiness::Failed(reasons.join("; "));
    }
    Readiness::Waiting(
        regions
            .iter()
            .filter(|r| !r.healthy())
            .filter_map(|r| {
                let problem = r.problem.as_deref()?;
                Some(if r.failed_attempts > 0 {
                    format!(
                        "{}: {problem} (attempt {} of {max} failed)",
                        r.region, r.failed_attempts
                    )
                } else {
                    format!("{}: {problem}", r.region)
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_regions_but_one_must_run_their_minimum() {
        assert!(!enough_regions_ready(&[]));
        assert!(!enough_regions_ready(&[(1, 0)]));
        assert!(enough_regions_ready(&[(1, 1)]));
        assert!(!enough_regions_ready(&[(3, 2)]));
        // A minimum of 0 still needs one instance.
        assert!(!enough_regions_ready(&[(0, 0)]));
        assert!(enough_regions_ready(&[(2, 2), (2, 0)]));
        assert!(!enough_regions_ready(&[(2, 1), (2, 0)]));
        assert!(!enough_regions_ready(&[(1, 1), (1, 0), (1, 0)]));
        assert!(enough_regions_ready(&[(1, 1), (1, 5), (1, 0)]));
    }

    fn region(name: &str, running: u64, problem: Option<&str>, failed: u32) -> RegionReadiness {
        RegionReadiness {
            region: name.into(),
            min_replicas: 1,
            running,
            problem: problem.map(Into::into),
            failed_attempts: failed,
        }
    }

    #[test]
    fn assess_reports_problems_and_fails_once_too_few_regions_can_succeed() {
        assert_eq!(assess(&[], 3), Readiness::Waiting(vec![]));
        assert_eq!(assess(&[region("local", 1, None, 0)], 3), Readiness::Ready);
        // A problem while still trying: shown, not fatal.
        assert_eq!(
            assess(&[region("local", 0, Some("image x not found"), 2)], 3),
            Readiness::Waiting(vec![
                "local: image x not found (attempt 2 of 3 failed)".into()
            ])
        );
        assert_eq!(
            assess(
                &[region(
                    "local",
                    0,
                    Some("health check GET /health answered 404"),
                    0
                )],
                3
            ),
            Readiness::Waiting(vec!["local: health check GET /health answered 404".into()])
        );
        // The only region gave up: failed, naming it.
        assert_eq!(
            assess(
                &[region("local", 0, Some("exited with code 1: boom"), 3)],
                3
            ),
            Readiness::Failed("local: exited with code 1: boom (3 failed attempts)".into())
        );
        // Three regions: one may be lost, two may not.
        let one_lost = [
            region("a", 0, Some("x"), 3),
            region("b", 0, None, 0),
            region("c", 0, None, 0),
        ];
        assert!(matches!(assess(&one_lost, 3), Readiness::Waiting(_)));
        let two_lost = [
            region("a", 0, Some("x"), 3),
            region("b", 0, Some("y"), 5),
            region("c", 1, None, 0),
        ];
        assert_eq!(
            assess(&two_lost, 3),
            Readiness::Failed("a: x (3 failed attempts); b: y (5 failed attempts)".into())
        );
        // A lost region does not matter once enough others run.
        let enough = [region("a", 0, Some("x"), 9), region("b", 1, None, 0)];
        assert_eq!(assess(&enough, 3), Readiness::Ready);
    }

    #[test]
    fn names_round_trip() {
        for s in DeploymentStatus::ALL {
            assert_eq!(s.as_str().parse::<DeploymentStatus>(), Ok(s));
        }
        for s in StepKind::ALL {
            assert_eq!(s.as_str().parse::<StepKind>(), Ok(s));
        }
        for s in [DesiredState::Running, DesiredState::Stopped] {
            assert_eq!(s.as_str().parse::<DesiredState>(), Ok(s));
        }
        let err = "Ready".parse::<DeploymentStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown deployment status \"Ready\"");
    }

    #[test]
    fn terminal_and_progressing_partition_the_statuses() {
        let terminal: Vec<_> = DeploymentStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                S::Ready,
                S::Failed,
                S::Skipped,
                S::Stopped,
                S::Superseded,
                S::Cancelled
            ]
        );
        for s in DeploymentStatus::ALL {
            assert_ne!(s.is_terminal(), s.is_progressing(), "{s}");
            if s.is_final() {
                assert!(s.is_terminal(), "{s}");
            }
        }
        assert!(S::Ready.is_active() && S::Pending.is_active() && !S::Stopped.is_active());
    }

    #[test]
    fn the_happy_path_is_legal_step_by_step() {
        let path = [
            S::Pending,
            S::Starting,
            S::Building,
            S::Deploying,
            S::Network,
            S::Finalizing,
            S::Ready,
        ];
        for pair in path.windows(2) {
            assert!(
                pair[0].can_transition_to(pair[1]),
                "{} -> {}",
                pair[0],
                pair[1]
            );
        }
        // An image deploy skips building.
        assert!(S::Starting.can_transition_to(S::Deploying));
        // Waking a stopped deployment: deploying, then ready or stopped again.
        assert!(S::Stopped.can_transition_to(S::Deploying));
        assert!(S::Deploying.can_transition_to(S::Ready));
        assert!(S::Deploying.can_transition_to(S::Stopped));
    }

    #[test]
    fn illegal_transitions() {
        let illegal = [
            (S::Deploying, S::Building), // backwards
            (S::Ready, S::Failed),       // ready is terminal for the workflow
            (S::Ready, S::Cancelled),
            (S::Deploying, S::Superseded), // instances already started
            (S::Starting, S::Skipped),
            (S::Stopped, S::Building), // waking goes straight to deploying
            (S::Network, S::Stopped),
            (S::Pending, S::Pending),
            (S::Pending, S::Stopped),
        ];
        for (from, to) in illegal {
            assert!(
                !from.can_transition_to(to),
                "{from} -> {to} must be illegal"
            );
        }
        for from in DeploymentStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in DeploymentStatus::ALL {
                assert!(
                    !from.can_transition_to(to),
                    "{from} is final but may become {to}"
                );
            }
        }
    }

    #[test]
    fn every_progressing_status_can_fail_or_be_cancelled() {
        for s in DeploymentStatus::ALL
            .into_iter()
            .filter(|s| s.is_progressing())
        {
            assert!(
                s.can_transition_to(S::Failed) && s.can_transition_to(S::Cancelled),
                "{s}"
            );
        }
    }

    #[test]
    fn every_status_reaches_a_terminal_one() {
        for start in DeploymentStatus::ALL {
            let mut seen = vec![start];
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for to in DeploymentStatus::ALL {
                    if s.can_transition_to(to) && !seen.contains(&to) {
                        seen.push(to);
                        frontier.push(to);
                    }
                }
            }
            assert!(
                seen.iter().any(|s| s.is_terminal()),
                "{start} cannot terminate"
            );
        }
    }

    #[test]
    fn pipeline_statuses_map_to_their_step() {
        assert_eq!(S::Pending.step(), Some(StepKind::Queued));
        assert_eq!(S::Network.step(), Some(StepKind::Network));
        assert_eq!(S::Ready.step(), None);
    }
}
