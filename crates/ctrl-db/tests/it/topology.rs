use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use ctrl_core::id::IdKind;
use ctrl_core::status::DesiredState;
use ctrl_db::topology::{self, NetworkPolicy, NewTopology};
use ctrl_db::{Error, cluster, tenancy};
use ctrl_testkit::test_database;
use rand::Rng;

use crate::fixtures::{NOW, deploy, id, tree};

fn new<'a>(t: &'a crate::fixtures::Tree, deployment_id: &'a str) -> NewTopology<'a> {
    NewTopology {
        workspace_id: &t.workspace,
        deployment_id,
        region_id: &t.region,
        min_replicas: 0,
        max_replicas: 0,
        cpu_threshold_percent: 80,
        memory_threshold_percent: 0,
        startup_timeout_seconds: 0,
    }
}

#[tokio::test]
async fn versions_increase_per_region_and_stamp_each_change() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let d = deploy(&db.pool, &t, &t.production, None).await?;
    assert_eq!(topology::current_version(&db.pool, &t.region).await?, 0);

    let mut tx = db.pool.begin().await?;
    assert_eq!(
        topology::upsert_running(&mut tx, &new(&t, &d.id), NOW).await?,
        1
    );
    tx.commit().await?;
    let rows = topology::list_by_deployment(&db.pool, &d.id).await?;
    assert_eq!(
        (rows[0].min_replicas, rows[0].max_replicas),
        (1, 1),
        "clamped to min >= 1, max >= min"
    );
    assert_eq!(
        (rows[0].version, rows[0].desired_status),
        (1, DesiredState::Running)
    );
    // Writing the same again (a retried step) takes no version.
    let mut tx = db.pool.begin().await?;
    assert_eq!(
        topology::upsert_running(&mut tx, &new(&t, &d.id), NOW).await?,
        1
    );
    tx.commit().await?;
    assert_eq!(topology::current_version(&db.pool, &t.region).await?, 1);

    let mut tx = db.pool.begin().await?;
    let written = topology::set_desired_status(&mut tx, &d.id, DesiredState::Stopped, NOW).await?;
    tx.commit().await?;
    assert_eq!(written, [(t.region.clone(), 2)]);
    let mut tx = db.pool.begin().await?;
    assert!(
        topology::set_desired_status(&mut tx, &d.id, DesiredState::Stopped, NOW)
            .await?
            .is_empty(),
        "no-op"
    );
    tx.commit().await?;
    assert_eq!(topology::current_version(&db.pool, &t.region).await?, 2);

    // Another region has its own sequence.
    let mut conn = db.pool.acquire().await?;
    let other = cluster::upsert_region(&mut conn, &id(IdKind::Region), "other", "dev", NOW).await?;
    drop(conn);
    let mut tx = db.pool.begin().await?;
    assert_eq!(topology::next_version(&mut tx, &other.id).await?, 1);
    tx.rollback().await?;
    assert_eq!(
        topology::current_version(&db.pool, &other.id).await?,
        0,
        "a rolled-back allocation leaves no trace"
    );
    Ok(())
}

#[tokio::test]
async fn the_watch_query_returns_changes_in_version_order_with_everything_to_apply() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let mut conn = db.pool.acquire().await?;
    tenancy::ensure_k8s_namespace(&mut conn, &t.workspace, "ns-acme", NOW).await?;
    drop(conn);
    let a = deploy(&db.pool, &t, &t.production, Some("main")).await?;
    let b = deploy(&db.pool, &t, &t.preview, Some("feat")).await?;
    for d in [&a, &b] {
        let mut tx = db.pool.begin().await?;
        topology::upsert_running(&mut tx, &new(&t, &d.id), NOW).await?;
        tx.commit().await?;
    }
    let policy = serde_json::json!({"ingress": [{"port": 8080}]});
    topology::upsert_network_policy(
        &db.pool,
        NetworkPolicy {
            id: &id(IdKind::NetworkPolicy),
            workspace_id: &t.workspace,
            deployment_id: &a.id,
            region_id: &t.region,
            k8s_namespace: "ns-acme",
            k8s_name: &a.k8s_name,
            policy: &policy,
        },
        NOW,
    )
    .await?;
    let mut tx = db.pool.begin().await?;
    topology::set_desired_status(&mut tx, &a.id, DesiredState::Stopped, NOW).await?; // a moves to version 3
    tx.commit().await?;

    let changes = topology::list_changes(&db.pool, &t.region, 0, 100).await?;
    let view: Vec<_> = changes
        .iter()
        .map(|c| (c.deployment_id.as_str(), c.version, c.desired_status))
        .collect();
    assert_eq!(
        view,
        [
            (b.id.as_str(), 2, DesiredState::Running),
            (a.id.as_str(), 3, DesiredState::Stopped)
        ],
        "coalesced to the latest change"
    );
    let first = &changes[1];
    assert_eq!(first.k8s_namespace.as_deref(), Some("ns-acme"));
    assert_eq!(
        (first.environment_slug.as_str(), first.region_name.as_str()),
        ("production", "local")
    );
    assert_eq!(first.network_policy.as_ref().map(|p| &p.0), Some(&policy));
    assert_eq!(first.image.as_deref(), Some("localhost/demo:1"));
    assert_eq!(
        topology::list_changes(&db.pool, &t.region, 2, 100)
            .await?
            .len(),
        1
    );
    assert!(
        topology::list_changes(&db.pool, &t.region, 3, 100)
            .await?
            .is_empty()
    );

    // The snapshot holds only what should run, paged by pk.
    let snapshot = topology::snapshot_page(&db.pool, &t.region, 0, 100).await?;
    assert_eq!(
        snapshot
            .iter()
            .map(|s| s.deployment_id.as_str())
            .collect::<Vec<_>>(),
        [b.id.as_str()]
    );
    assert!(
        topology::snapshot_page(&db.pool, &t.region, snapshot[0].pk, 100)
            .await?
            .is_empty()
    );

    assert_eq!(
        topology::find_desired(&db.pool, &t.region, &a.id)
            .await?
            .desired_status,
        DesiredState::Stopped
    );
    assert!(matches!(
        topology::find_desired(&db.pool, &t.region, "d_missing").await,
        Err(Error::NotFound(_))
    ));
    Ok(())
}

/// The invariant behind Watch: a reader that has seen version v never later
/// sees a change with a version <= v. Many writers race in one region, each
/// holding its transaction open for a random time after taking a version;
/// a reader polls `version > cursor` and advances its cursor to the highest
/// version it saw. The reader must end up having seen the latest version of
/// every row: one committed behind its cursor would never reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_let_a_change_appear_behind_a_readers_cursor() -> Result<()> {
    const WRITERS: usize = 8;
    const CHANGES_PER_WRITER: usize = 12;
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let mut deployments = Vec::new();
    for _ in 0..WRITERS {
        deployments.push(deploy(&db.pool, &t, &t.preview, None).await?.id);
    }

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (pool, region, done) = (db.pool.clone(), t.region.clone(), done.clone());
        tokio::spawn(async move {
            let mut cursor = 0u64;
            let mut seen = BTreeSet::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                for change in topology::list_changes(&pool, &region, cursor, 1000).await? {
                    seen.insert(change.version);
                    cursor = cursor.max(change.version);
                }
                if finished {
                    return Ok::<_, anyhow::Error>((cursor, seen));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut writers = Vec::new();
    for deployment_id in deployments.clone() {
        let (pool, t) = (db.pool.clone(), t.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..CHANGES_PER_WRITER {
                let mut tx = pool.begin().await?;
                if i % 2 == 0 {
                    topology::upsert_running(&mut tx, &new(&t, &deployment_id), NOW).await?;
                } else {
                    topology::set_desired_status(
                        &mut tx,
                        &deployment_id,
                        DesiredState::Stopped,
                        NOW,
                    )
                    .await?;
                }
                let pause = rand::rng().random_range(0..5);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                tx.commit().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for w in writers {
        w.await??;
    }
    done.store(true, Ordering::SeqCst);
    let (cursor, seen) = reader.await??;

    let total = (WRITERS * CHANGES_PER_WRITER) as u64;
    assert_eq!(topology::current_version(&db.pool, &t.region).await?, total);
    assert_eq!(cursor, total, "the reader caught up with every change");
    // Each row's latest change must have reached the reader: a change that
    // committed with a version at or below the reader's cursor at that time
    // would be missing from `seen` for good.
    let finals = topology::list_changes(&db.pool, &t.region, 0, 1000).await?;
    assert_eq!(finals.len(), WRITERS);
    for f in &finals {
        assert!(
            seen.contains(&f.version),
            "the reader never saw version {} of {}",
            f.version,
            f.deployment_id
        );
    }
    Ok(())
}
