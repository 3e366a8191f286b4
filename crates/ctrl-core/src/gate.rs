//! Deploy-gate rules: may this deployment be promoted, rolled back to,
//! stopped or woken? One implementation for the API (which answers
//! `failed_precondition` with [`GateError`]'s message) and the worker (which
//! fails terminally with the same message).
//!
//! The order of the checks is part of the contract: it decides which message
//! a caller sees when several rules are broken.

use crate::status::{DeploymentStatus, DesiredState};

/// What the rules need to know about a deployment.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentFacts<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its project.
    pub project_id: &'a str,
    /// Its app.
    pub app_id: &'a str,
    /// Its environment.
    pub environment_id: &'a str,
    /// Its status.
    pub status: DeploymentStatus,
    /// Whether its instances should run.
    pub desired_state: DesiredState,
    /// Whether its environment is the app's production environment.
    pub is_production: bool,
}

/// What the rules need to know about the app.
#[derive(Debug, Clone, Copy)]
pub struct AppFacts<'a> {
    /// The live deployment, if any.
    pub live_deployment_id: Option<&'a str>,
    /// Whether auto-promotion is frozen by a rollback.
    pub is_rolled_back: bool,
}

/// A broken rule. `message()` is the one user-facing text for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// Target status is not ready.
    #[error("The deployment is not ready.")]
    TargetNotReady,
    /// Target is being stopped.
    #[error("The deployment is shutting down and cannot serve traffic.")]
    TargetIsDraining,
    /// Target is not in the production environment.
    #[error("Only production deployments can be promoted or rolled back.")]
    TargetNotProduction,
    /// The app has no live deployment.
    #[error("The app has no current deployment.")]
    NoLiveDeployment,
    /// Target is already live (and, for promote, not rolled back).
    #[error("The deployment is already the current deployment.")]
    TargetIsLive,
    /// Rollback across projects.
    #[error("The deployments must be in the same project.")]
    DifferentProject,
    /// Rollback across apps.
    #[error("The deployments must belong to the same app.")]
    DifferentApp,
    /// Rollback across environments.
    #[error("The deployments must be in the same environment.")]
    DifferentEnvironment,
    /// The given source is not the live deployment.
    #[error("The source deployment is not the current live deployment.")]
    SourceNotLive,
    /// Source and target are the same.
    #[error("Source and target deployments must be different.")]
    SameDeployment,
    /// Stop of a deployment that is not ready.
    #[error("The deployment is not running.")]
    NotRunning,
    /// Stop of a deployment already stopping.
    #[error("The deployment is already stopping.")]
    AlreadyStopping,
    /// Stop of a production deployment by a user.
    #[error("Production deployments cannot be stopped.")]
    ProductionStop,
    /// Any stop of the live deployment.
    #[error("The live deployment cannot be stopped.")]
    LiveStop,
    /// Wake of a deployment that is not stopped.
    #[error("The deployment is not stopped.")]
    NotStopped,
    /// Wake of a production deployment.
    #[error("Production deployments cannot be started.")]
    ProductionWake,
    /// Delete of the live deployment on its own.
    #[error(
        "The live deployment cannot be deleted; roll back to or promote another deployment first."
    )]
    LiveDelete,
}

impl GateError {
    /// The user-facing message (same as `Display`).
    pub fn message(self) -> String {
        self.to_string()
    }
}

/// Checks shared by promote and rollback targets, in order.
fn check_target(
    target: &DeploymentFacts<'_>,
    app: &AppFacts<'_>,
    promote: bool,
) -> Result<(), GateError> {
    if target.status != DeploymentStatus::Ready {
        return Err(GateError::TargetNotReady);
    }
    if target.desired_state != DesiredState::Running {
        return Err(GateError::TargetIsDraining);
    }
    if !target.is_production {
        return Err(GateError::TargetNotProduction);
    }
    let Some(live) = app.live_deployment_id else {
        return Err(GateError::NoLiveDeployment);
    };
    // Promoting the live deployment is allowed while rolled back: it
    // "confirms" the rollback and unfreezes auto-promotion.
    if live == target.id && (!promote || !app.is_rolled_back) {
        return Err(GateError::TargetIsLive);
    }
    Ok(())
}

/// May `target` be made live?
pub fn check_promote(target: &DeploymentFacts<'_>, app: &AppFacts<'_>) -> Result<(), GateError> {
    check_target(target, app, true)
}

/// May the app roll back from `source` (the deployment expected to be live;
/// `None` = whatever is live) to `target`?
pub fn check_rollback(
    source: Option<&DeploymentFacts<'_>>,
    target: &DeploymentFacts<'_>,
    app: &AppFacts<'_>,
) -> Result<(), GateError> {
    check_target(target, app, false)?;
    let Some(source) = source else { return Ok(()) };
    if source.project_id != target.project_id {
        return Err(GateError::DifferentProject);
    }
    if source.app_id != target.app_id {
        return Err(GateError::DifferentApp);
    }
    if source.environment_id != target.environment_id {
        return Err(GateError::DifferentEnvironment);
    }
    if app.live_deployment_id != Some(source.id) {
        return Err(GateError::SourceNotLive);
    }
    if source.id == target.id {
        return Err(GateError::SameDeployment);
    }
    Ok(())
}

/// May a user stop `d` (StopDeployment)?
pub fn check_stop(d: &DeploymentFacts<'_>, app: &AppFacts<'_>) -> Result<(), GateError> {
    if d.status != DeploymentStatus::Ready {
        return Err(GateError::NotRunning);
    }
    if d.desired_state != DesiredState::Running {
        return Err(GateError::AlreadyStopping);
    }
    if d.is_production {
        return Err(GateError::ProductionStop);
    }
    if app.live_deployment_id == Some(d.id) {
        return Err(GateError::LiveStop);
    }
    Ok(())
}

/// May a user wake `d` (WakeDeployment)?
pub fn check_wake(d: &DeploymentFacts<'_>) -> Result<(), GateError> {
    if d.desired_state != DesiredState::Stopped {
        return Err(GateError::NotStopped);
    }
    if d.is_production {
        return Err(GateError::ProductionWake);
    }
    Ok(())
}

/// May a request arriving at the edge wake `d`? The user's wake rule, for
/// a deployment that ran before (ready, or stopped after being ready): a
/// failed or superseded deployment never starts because someone asked for
/// its hostname.
pub fn check_wake_on_request(d: &DeploymentFacts<'_>) -> Result<(), GateError> {
    check_wake(d)?;
    if !matches!(
        d.status,
        DeploymentStatus::Ready | DeploymentStatus::Stopped
    ) {
        return Err(GateError::TargetNotReady);
    }
    Ok(())
}

/// May a user delete `d` on its own (DeleteDeployment)? Anything but the
/// live deployment (a cascade deleting its app takes that one too).
pub fn check_delete(d: &DeploymentFacts<'_>, app: &AppFacts<'_>) -> Result<(), GateError> {
    if app.live_deployment_id == Some(d.id) {
        return Err(GateError::LiveDelete);
    }
    Ok(())
}

/// May the system change `d`'s desired state to `to` (scheduled retirement of
/// old production deployments, preview clean-up)? The live deployment can
/// never be stopped.
pub fn check_desired_state_change(
    d: &DeploymentFacts<'_>,
    app: &AppFacts<'_>,
    to: DesiredState,
) -> Result<(), GateError> {
    if to == DesiredState::Stopped && app.live_deployment_id == Some(d.id) {
        return Err(GateError::LiveStop);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(id: &str) -> DeploymentFacts<'_> {
        DeploymentFacts {
            id,
            project_id: "proj_1",
            app_id: "app_1",
            environment_id: "env_prod",
            status: DeploymentStatus::Ready,
            desired_state: DesiredState::Running,
            is_production: true,
        }
    }

    const LIVE_A: AppFacts<'static> = AppFacts {
        live_deployment_id: Some("d_a"),
        is_rolled_back: false,
    };

    #[test]
    fn promote_checks_in_order() {
        let b = ready("d_b");
        assert_eq!(check_promote(&b, &LIVE_A), Ok(()));
        let cases = [
            (
                DeploymentFacts {
                    status: DeploymentStatus::Deploying,
                    desired_state: DesiredState::Stopped,
                    ..b
                },
                LIVE_A,
                GateError::TargetNotReady,
            ),
            (
                DeploymentFacts {
                    desired_state: DesiredState::Stopped,
                    is_production: false,
                    ..b
                },
                LIVE_A,
                GateError::TargetIsDraining,
            ),
            (
                DeploymentFacts {
                    is_production: false,
                    ..b
                },
                AppFacts {
                    live_deployment_id: None,
                    ..LIVE_A
                },
                GateError::TargetNotProduction,
            ),
            (
                b,
                AppFacts {
                    live_deployment_id: None,
                    ..LIVE_A
                },
                GateError::NoLiveDeployment,
            ),
            (ready("d_a"), LIVE_A, GateError::TargetIsLive),
        ];
        for (target, app, expected) in cases {
            assert_eq!(check_promote(&target, &app), Err(expected));
        }
        // Promoting the live deployment while rolled back confirms the rollback.
        let rolled_back = AppFacts {
            is_rolled_back: true,
            ..LIVE_A
        };
        assert_eq!(check_promote(&ready("d_a"), &rolled_back), Ok(()));
    }

    #[test]
    fn rollback_checks_in_order() {
        let (a, b) = (ready("d_a"), ready("d_b"));
        assert_eq!(check_rollback(Some(&a), &b, &LIVE_A), Ok(()));
        assert_eq!(
            check_rollback(None, &b, &LIVE_A),
            Ok(()),
            "source defaults to live"
        );
        // Rolling back to the live deployment, even while rolled back, is refused.
        let rolled_back = AppFacts {
            is_rolled_back: true,
            ..LIVE_A
        };
        assert_eq!(
            check_rollback(Some(&a), &a, &rolled_back),
            Err(GateError::TargetIsLive)
        );
        let other_project = DeploymentFacts {
            project_id: "proj_2",
            app_id: "app_2",
            ..a
        };
        assert_eq!(
            check_rollback(Some(&other_project), &b, &LIVE_A),
            Err(GateError::DifferentProject)
        );
        let other_app = DeploymentFacts {
            app_id: "app_2",
            environment_id: "env_2",
            ..a
        };
        assert_eq!(
            check_rollback(Some(&other_app), &b, &LIVE_A),
            Err(GateError::DifferentApp)
        );
        let other_env = DeploymentFacts {
            environment_id: "env_2",
            ..a
        };
        assert_eq!(
            check_rollback(Some(&other_env), &b, &LIVE_A),
            Err(GateError::DifferentEnvironment)
        );
        let c = ready("d_c");
        assert_eq!(
            check_rollback(Some(&c), &b, &LIVE_A),
            Err(GateError::SourceNotLive)
        );
        assert_eq!(
            check_rollback(
                Some(&b),
                &b,
                &AppFacts {
                    live_deployment_id: Some("d_b"),
                    ..LIVE_A
                }
            ),
            Err(GateError::TargetIsLive),
            "the target check runs first"
        );
        let preview = DeploymentFacts {
            is_production: false,
            ..b
        };
        assert_eq!(
            check_rollback(Some(&a), &preview, &LIVE_A),
            Err(GateError::TargetNotProduction)
        );
    }

    #[test]
    fn stop_and_wake() {
        let preview = DeploymentFacts {
            is_production: false,
            environment_id: "env_prev",
            ..ready("d_p")
        };
        assert_eq!(check_stop(&preview, &LIVE_A), Ok(()));
        assert_eq!(
            check_stop(
                &DeploymentFacts {
                    status: DeploymentStatus::Building,
                    ..preview
                },
                &LIVE_A
            ),
            Err(GateError::NotRunning)
        );
        let stopping = DeploymentFacts {
            desired_state: DesiredState::Stopped,
            ..preview
        };
        assert_eq!(
            check_stop(&stopping, &LIVE_A),
            Err(GateError::AlreadyStopping)
        );
        assert_eq!(
            check_stop(&ready("d_b"), &LIVE_A),
            Err(GateError::ProductionStop)
        );

        assert_eq!(check_wake(&stopping), Ok(()));
        assert_eq!(check_wake(&preview), Err(GateError::NotStopped));
        let prod_stopped = DeploymentFacts {
            desired_state: DesiredState::Stopped,
            ..ready("d_b")
        };
        assert_eq!(check_wake(&prod_stopped), Err(GateError::ProductionWake));
    }

    #[test]
    fn the_live_deployment_is_never_stopped() {
        let a = ready("d_a");
        assert_eq!(
            check_desired_state_change(&a, &LIVE_A, DesiredState::Stopped),
            Err(GateError::LiveStop)
        );
        assert_eq!(
            check_desired_state_change(&a, &LIVE_A, DesiredState::Running),
            Ok(())
        );
        assert_eq!(
            check_desired_state_change(&ready("d_old"), &LIVE_A, DesiredState::Stopped),
            Ok(())
        );
    }

    #[test]
    fn only_the_live_deployment_cannot_be_deleted_on_its_own() {
        assert_eq!(
            check_delete(&ready("d_a"), &LIVE_A),
            Err(GateError::LiveDelete)
        );
        assert_eq!(check_delete(&ready("d_old"), &LIVE_A), Ok(()));
        let mut failed = ready("d_failed");
        failed.status = DeploymentStatus::Failed;
        assert_eq!(check_delete(&failed, &LIVE_A), Ok(()));
    }

    #[test]
    fn messages_are_the_public_catalogue() {
        assert_eq!(
            GateError::TargetNotReady.message(),
            "The deployment is not ready."
        );
        assert_eq!(
            GateError::TargetNotProduction.message(),
            "Only production deployments can be promoted or rolled back."
        );
        assert_eq!(
            GateError::ProductionStop.message(),
            "Production deployments cannot be stopped."
        );
    }
}
