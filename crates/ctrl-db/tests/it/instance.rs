use anyhow::Result;
use ctrl_core::id::IdKind;
use ctrl_db::instance::{self, InstanceEvent, ReportedInstance};
use ctrl_db::types::InstanceStatus;
use ctrl_testkit::test_database;

use crate::fixtures::{NOW, deploy, id, tree};

fn reported(name: &str, status: InstanceStatus) -> ReportedInstance {
    ReportedInstance {
        new_id: id(IdKind::Instance),
        name: name.into(),
        address: format!("10.0.0.1:{}", name.len() + 8000),
        cpu_millicores: 250,
        memory_mib: 256,
        status,
    }
}

#[tokio::test]
async fn reports_replace_the_instance_set() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;

    let mut tx = db.pool.begin().await?;
    let changed = instance::replace_for_deployment(
        &mut tx,
        &t.workspace,
        &d.id,
        &t.region,
        &[
            reported("c1", InstanceStatus::Running),
            reported("c2", InstanceStatus::Pending),
        ],
        NOW,
    )
    .await?;
    tx.commit().await?;
    assert!(changed);
    assert_eq!(
        instance::list_by_deployment(&db.pool, &d.id)
            .await?
            .iter()
            .map(|i| (i.name.as_str(), i.region_id.as_str(), i.status))
            .collect::<Vec<_>>(),
        [
            ("c1", t.region.as_str(), InstanceStatus::Running),
            ("c2", t.region.as_str(), InstanceStatus::Pending)
        ]
    );

    // The same report again changes nothing.
    let mut tx = db.pool.begin().await?;
    let again = instance::replace_for_deployment(
        &mut tx,
        &t.workspace,
        &d.id,
        &t.region,
        &[
            reported("c1", InstanceStatus::Running),
            reported("c2", InstanceStatus::Pending),
        ],
        NOW + 1,
    )
    .await?;
    tx.commit().await?;
    assert!(!again, "an identical report is not a change");

    // c2 became healthy, c1 is gone: the set is replaced.
    let mut tx = db.pool.begin().await?;
    instance::replace_for_deployment(
        &mut tx,
        &t.workspace,
        &d.id,
        &t.region,
        &[reported("c2", InstanceStatus::Running)],
        NOW + 2,
    )
    .await?;
    tx.commit().await?;
    let all = instance::list_by_deployment(&db.pool, &d.id).await?;
    assert_eq!(
        all.iter()
            .map(|i| (i.name.as_str(), i.status))
            .collect::<Vec<_>>(),
        [("c2", InstanceStatus::Running)]
    );

    assert_eq!(
        instance::delete_for_deployment(&db.pool, &d.id, &t.region, NOW).await?,
        1
    );
    assert!(
        instance::list_by_deployment(&db.pool, &d.id)
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn exit_events_are_recorded_and_stale_ones_dropped() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;
    let mut tx = db.pool.begin().await?;
    instance::replace_for_deployment(
        &mut tx,
        &t.workspace,
        &d.id,
        &t.region,
        &[reported("c1", InstanceStatus::Running)],
        NOW,
    )
    .await?;
    tx.commit().await?;

    let exit = |restart_count, at, code| InstanceEvent {
        name: "c1",
        restart_count,
        exit_code: Some(code),
        reason: Some("OOMKilled"),
        oom_killed: code == 137,
        at,
        waiting: false,
    };
    assert!(instance::record_event(&db.pool, &t.region, &exit(2, NOW + 10, 137)).await?);
    assert!(
        !instance::record_event(&db.pool, &t.region, &exit(1, NOW + 20, 1)).await?,
        "lower restart count is stale"
    );
    assert!(
        !instance::record_event(&db.pool, &t.region, &exit(2, NOW + 5, 1)).await?,
        "same count, older event is stale"
    );
    let row = &instance::list_by_deployment(&db.pool, &d.id).await?[0];
    assert_eq!(
        (row.restart_count, row.last_exit_code, row.oom_killed),
        (2, Some(137), true)
    );
    assert_eq!(row.status, InstanceStatus::Failed);
    assert_eq!(row.last_exit_at, Some(NOW + 10));

    let waiting = InstanceEvent {
        exit_code: None,
        reason: Some("CrashLoopBackOff"),
        waiting: true,
        oom_killed: false,
        ..exit(3, NOW + 30, 0)
    };
    assert!(instance::record_event(&db.pool, &t.region, &waiting).await?);
    let row = &instance::list_by_deployment(&db.pool, &d.id).await?[0];
    assert_eq!(row.waiting_reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(row.last_exit_code, Some(137), "a wait keeps the last exit");
    Ok(())
}
