use anyhow::Result;
use ctrl_core::status::{DeploymentStatus as S, DesiredState, StepKind};
use ctrl_db::Error;
use ctrl_db::deployment::{self, ListFilter};
use ctrl_db::types::{SourceKind, TriggerKind};
use ctrl_testkit::test_database;

use crate::fixtures::{NOW, deploy, new_deployment, tree};

#[tokio::test]
async fn a_deployment_round_trips_every_column() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let new = new_deployment(&t, &t.production, Some("feat/ünïcode"));
    deployment::insert(&db.pool, &new, NOW).await?;
    let d = deployment::get(&db.pool, &new.id).await?;
    assert_eq!(d.status, S::Pending);
    assert_eq!(d.desired_state, DesiredState::Running);
    assert_eq!(d.source_kind, SourceKind::Image);
    assert_eq!(d.trigger_kind, TriggerKind::Cli);
    assert_eq!(d.git_branch.as_deref(), Some("feat/ünïcode"));
    assert_eq!(d.git_commit_message.as_deref(), Some("fix: ünïcode ✓"));
    assert_eq!(d.encrypted_environment, new.encrypted_environment);
    assert_eq!(d.command.0, new.runtime.command.0);
    assert_eq!((d.port, d.cpu_millicores, d.memory_mib), (8080, 250, 256));
    assert_eq!((d.created_at, d.updated_at), (NOW, NOW));
    assert!(matches!(
        deployment::get(&db.pool, "d_missing").await,
        Err(Error::NotFound("deployment"))
    ));
    Ok(())
}

#[tokio::test]
async fn idempotency_keys_are_unique_per_app() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let mut first = new_deployment(&t, &t.production, None);
    first.idempotency_key = Some("ci-run-42".into());
    deployment::insert(&db.pool, &first, NOW).await?;
    let mut again = new_deployment(&t, &t.production, None);
    again.idempotency_key = Some("ci-run-42".into());
    let err = deployment::insert(&db.pool, &again, NOW).await;
    assert!(
        matches!(err, Err(Error::AlreadyExists { ref key }) if key == "deployments_idempotency"),
        "{err:?}"
    );
    let found = deployment::find_by_idempotency_key(&db.pool, &t.app, "ci-run-42").await?;
    assert_eq!(found.map(|d| d.id), Some(first.id));
    assert_eq!(
        deployment::find_by_idempotency_key(&db.pool, &t.app, "other").await?,
        None
    );
    // Deployments without a key never clash.
    deployment::insert(&db.pool, &new_deployment(&t, &t.production, None), NOW).await?;
    deployment::insert(&db.pool, &new_deployment(&t, &t.production, None), NOW).await?;
    Ok(())
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let a = deploy(&db.pool, &t, &t.production, Some("main")).await?;
    let b = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;
    let c = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;
    deployment::compare_and_set_status(&db.pool, &c.id, S::Pending, S::Failed, NOW).await?;

    let all = ListFilter {
        app_id: &t.app,
        ..Default::default()
    };
    let page = deployment::list(&db.pool, &all, 0, 2).await?;
    assert_eq!(
        page.items.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&c.id, &b.id]
    );
    let rest = deployment::list(&db.pool, &all, page.next_cursor.unwrap(), 2).await?;
    assert_eq!(
        rest.items.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&a.id]
    );
    assert_eq!(rest.next_cursor, None);

    let preview_feat = ListFilter {
        app_id: &t.app,
        environment_id: Some(&t.preview),
        branch: Some("feat"),
        statuses: &[S::Pending],
    };
    let found = deployment::list(&db.pool, &preview_feat, 0, 10).await?;
    assert_eq!(
        found.items.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&b.id]
    );
    Ok(())
}

#[tokio::test]
async fn conditional_status_updates_let_the_first_writer_win() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;
    assert!(
        deployment::compare_and_set_status(&db.pool, &d.id, S::Pending, S::Starting, NOW).await?
    );
    assert!(
        !deployment::compare_and_set_status(&db.pool, &d.id, S::Pending, S::Starting, NOW).await?
    );

    // Cancellation wins; the workflow's later failure does not overwrite it.
    assert!(
        deployment::set_status_if_active(
            &db.pool,
            &d.id,
            S::Cancelled,
            Some("Cancelled by user"),
            NOW
        )
        .await?
    );
    assert!(
        !deployment::set_status_if_active(&db.pool, &d.id, S::Failed, Some("boom"), NOW).await?
    );
    let after = deployment::get(&db.pool, &d.id).await?;
    assert_eq!(
        (after.status, after.error_message.as_deref()),
        (S::Cancelled, Some("Cancelled by user"))
    );
    Ok(())
}

#[tokio::test]
async fn image_invocation_and_desired_state_setters() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;
    deployment::set_image(&db.pool, &d.id, "localhost/built:2", Some("bld_1"), NOW + 1).await?;
    deployment::set_invocation_id(&db.pool, &d.id, "inv_123", NOW + 2).await?;
    deployment::set_desired_state(&db.pool, &d.id, DesiredState::Stopped, NOW + 3).await?;
    let after = deployment::get(&db.pool, &d.id).await?;
    assert_eq!(after.image.as_deref(), Some("localhost/built:2"));
    assert_eq!(after.build_id.as_deref(), Some("bld_1"));
    assert_eq!(after.invocation_id.as_deref(), Some("inv_123"));
    assert_eq!(
        (after.desired_state, after.updated_at),
        (DesiredState::Stopped, NOW + 3)
    );
    assert!(matches!(
        deployment::set_image(&db.pool, "d_missing", "x", None, NOW).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        deployment::set_desired_state(&db.pool, "d_missing", DesiredState::Running, NOW).await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}

#[tokio::test]
async fn superseding_and_sibling_queries_are_per_app_environment_and_branch() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let old = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;
    let other_branch = deploy(&db.pool, &t, &t.preview, Some("other")).await?;
    let no_branch = deploy(&db.pool, &t, &t.preview, None).await?;
    let new = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;

    assert!(deployment::has_newer_active(&db.pool, &old).await?);
    assert!(!deployment::has_newer_active(&db.pool, &new).await?);
    assert!(!deployment::has_newer_active(&db.pool, &other_branch).await?);
    assert!(
        !deployment::has_newer_active(&db.pool, &no_branch).await?,
        "NULL branch compares NULL-safe"
    );
    assert_eq!(
        deployment::list_older_not_started(&db.pool, &new).await?,
        std::slice::from_ref(&old.id)
    );

    // Once the newer one failed, the old one is no longer outdated by it.
    deployment::set_status_if_active(&db.pool, &new.id, S::Failed, None, NOW).await?;
    assert!(!deployment::has_newer_active(&db.pool, &old).await?);

    // Older running siblings: ready or stopped with desired state running,
    // created before; never a newer one.
    deployment::compare_and_set_status(&db.pool, &old.id, S::Pending, S::Ready, NOW).await?;
    let newest = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;
    assert_eq!(
        deployment::list_older_running_siblings(&db.pool, &newest).await?,
        std::slice::from_ref(&old.id)
    );
    assert!(
        deployment::list_older_running_siblings(&db.pool, &old)
            .await?
            .is_empty()
    );
    assert!(!deployment::has_newer_ready_sibling(&db.pool, &old).await?);
    deployment::compare_and_set_status(&db.pool, &newest.id, S::Pending, S::Ready, NOW).await?;
    assert!(deployment::has_newer_ready_sibling(&db.pool, &old).await?);
    assert!(!deployment::has_newer_ready_sibling(&db.pool, &newest).await?);
    assert!(deployment::is_newer(&db.pool, &newest.id, &old.id).await?);
    assert!(!deployment::is_newer(&db.pool, &old.id, &newest.id).await?);
    assert!(!deployment::is_newer(&db.pool, &old.id, "d_missing").await?);
    Ok(())
}

#[tokio::test]
async fn a_stopped_deployment_is_marked_once_its_instances_are_gone() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.preview, None).await?;
    deployment::compare_and_set_status(&db.pool, &d.id, S::Pending, S::Ready, NOW).await?;
    assert!(
        !deployment::mark_stopped_if_drained(&db.pool, &d.id, NOW).await?,
        "still desired running"
    );
    deployment::set_desired_state(&db.pool, &d.id, DesiredState::Stopped, NOW).await?;
    sqlx::query("INSERT INTO instances (id, workspace_id, deployment_id, region_id, name, address, cpu_millicores, memory_mib, status, created_at, updated_at) VALUES ('ins_1', ?, ?, ?, 'c1', '10.0.0.1:8080', 250, 256, 'running', 0, 0)")
        .bind(&t.workspace).bind(&d.id).bind(&t.region).execute(&db.pool).await?;
    assert!(
        !deployment::mark_stopped_if_drained(&db.pool, &d.id, NOW).await?,
        "an instance remains"
    );
    sqlx::query("DELETE FROM instances")
        .execute(&db.pool)
        .await?;
    assert!(deployment::mark_stopped_if_drained(&db.pool, &d.id, NOW).await?);
    assert_eq!(deployment::get(&db.pool, &d.id).await?.status, S::Stopped);
    Ok(())
}

#[tokio::test]
async fn steps_restart_on_retry_and_the_first_end_wins() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;
    deployment::start_step(
        &db.pool,
        &t.workspace,
        &d.id,
        StepKind::Deploying,
        "starting instances",
        NOW,
    )
    .await?;
    deployment::start_step(
        &db.pool,
        &t.workspace,
        &d.id,
        StepKind::Queued,
        "queued",
        NOW - 10,
    )
    .await?;
    assert!(deployment::end_step(&db.pool, &d.id, StepKind::Queued, None, NOW).await?);

    assert_eq!(
        deployment::end_running_steps(&db.pool, &d.id, "Cancelled by user", NOW + 5).await?,
        1
    );
    assert!(
        !deployment::end_step(
            &db.pool,
            &d.id,
            StepKind::Deploying,
            Some("timeout"),
            NOW + 9
        )
        .await?
    );
    let steps = deployment::list_steps(&db.pool, &d.id).await?;
    assert_eq!(
        steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [StepKind::Queued, StepKind::Deploying],
        "phase order"
    );
    assert_eq!(steps[1].error.as_deref(), Some("Cancelled by user"));
    assert_eq!(steps[1].ended_at, Some(NOW + 5));

    // A retried workflow restarts the step: end and error cleared.
    deployment::start_step(
        &db.pool,
        &t.workspace,
        &d.id,
        StepKind::Deploying,
        "again",
        NOW + 20,
    )
    .await?;
    let step = deployment::list_steps(&db.pool, &d.id)
        .await?
        .pop()
        .unwrap();
    assert_eq!(
        (step.ended_at, step.error, step.started_at),
        (None, None, NOW + 20)
    );

    // Long errors are cut at 512 bytes on a character boundary.
    let long = "é".repeat(400);
    deployment::end_step(&db.pool, &d.id, StepKind::Deploying, Some(&long), NOW + 21).await?;
    let step = deployment::list_steps(&db.pool, &d.id)
        .await?
        .pop()
        .unwrap();
    assert_eq!(step.error.unwrap().len(), 512);
    Ok(())
}

#[tokio::test]
async fn deployments_are_counted_per_app_and_environment() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    assert_eq!(deployment::count_for_app(&db.pool, &t.app).await?, 0);
    deploy(&db.pool, &t, &t.production, None).await?;
    deploy(&db.pool, &t, &t.preview, None).await?;
    deploy(&db.pool, &t, &t.preview, None).await?;
    assert_eq!(deployment::count_for_app(&db.pool, &t.app).await?, 3);
    assert_eq!(
        deployment::count_for_environment(&db.pool, &t.preview).await?,
        2
    );
    assert_eq!(
        deployment::count_for_environment(&db.pool, &t.production).await?,
        1
    );
    Ok(())
}

#[tokio::test]
async fn only_a_never_started_deployment_can_be_deleted_as_unstarted() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let started = deploy(&db.pool, &t, &t.production, None).await?;
    deployment::set_invocation_id(&db.pool, &started.id, "inv_1", NOW).await?;
    assert!(!deployment::delete_unstarted(&db.pool, &started.id).await?);
    let running = deploy(&db.pool, &t, &t.production, None).await?;
    deployment::compare_and_set_status(&db.pool, &running.id, S::Pending, S::Starting, NOW).await?;
    assert!(!deployment::delete_unstarted(&db.pool, &running.id).await?);
    let orphan = deploy(&db.pool, &t, &t.production, None).await?;
    assert!(deployment::delete_unstarted(&db.pool, &orphan.id).await?);
    assert!(matches!(
        deployment::get(&db.pool, &orphan.id).await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}
